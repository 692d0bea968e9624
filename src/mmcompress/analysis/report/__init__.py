"""`mmcompress report`: read run directories (never W&B, never the network) into tables and plots.

Runs that differ only by seed are one configuration, shown as mean ± std over its complete seeds; failed
and unfinished runs are listed as such, never dropped. When the report names a best configuration it
selects on the validation split and reports the test split.
"""
