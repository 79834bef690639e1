"""A throwaway SeaweedFS (S3 over HTTPS) on loopback, for the tests and the sandbox."""
