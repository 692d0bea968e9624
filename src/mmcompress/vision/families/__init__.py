"""Expert families, one module each; importing this package registers every module here in `EXPERTS`,
so a new family is one new file in this folder (plus a yaml in conf/encoder/)."""

import importlib
import pkgutil

from mmcompress.vision.expert import EXPERTS

__all__ = ["EXPERTS"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
