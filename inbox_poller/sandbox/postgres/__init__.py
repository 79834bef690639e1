"""A throwaway PostgreSQL cluster on loopback, for the tests, the benchmarks and the sandbox."""
