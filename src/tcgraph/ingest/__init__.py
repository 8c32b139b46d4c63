"""The write side: every way data gets in (files, pulse, the REST upstream), all ending in
store.writes. `shapes` validates Taskcluster's JSON once for all of them."""
