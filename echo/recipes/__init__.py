"""Training recipes on real recordings: data sets built from a folder of real speech and noise
corpora (``real_data``), and the runs that train on them."""
