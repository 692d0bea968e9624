"""Vision experts → their patch maps → the common grid → pruning signals (the first rooms of the data flow)."""
