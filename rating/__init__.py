"""Rating: tariffs, vectorized kernels, master–sub apportionment and the billing run."""
