"""Paired data sets: HDF5 shards of cases, each with synthetic and realistic shots from the
same poses (shared/DESIGN.md §4). `shards` defines the format, `simulate` writes it,
`dataset` reads it for training, `preview` draws it."""
