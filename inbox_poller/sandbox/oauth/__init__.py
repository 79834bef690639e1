"""A local OAuth2 authorization server over HTTPS, for the tests of the OAuth2 login.

Not the product: :class:`.server.OAuthServer` plays Microsoft's, Google's and any other
provider's token endpoint on loopback, and the introspection endpoint Dovecot's
``oauth2`` passdb asks (``inbox_poller.sandbox.dovecot``, docs/dovecot.md).
"""
