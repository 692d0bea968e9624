"""Analysis of finished runs: sweeps (sweep.py), reports (report/) and the AC score (ac/)."""
