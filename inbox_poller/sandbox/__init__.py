"""Not the product: the demo and the stand-in servers the tests and benchmarks use."""
