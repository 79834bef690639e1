"""A simulated Pinpointe over HTTPS on loopback, for the sandbox and the tests."""
