"""Where pretrained weights come from: hub ids, local directories, and — where the hub cannot be reached —
stand-ins built once from packages on the registry (catalog.py, packages.py, convert.py, resolve.py)."""
