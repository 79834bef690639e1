"""OAuth2 access tokens for the IMAP login: the edge room for token endpoints.

``tokens.TokenSource`` implements ``ports.AccessTokens`` over one grant
(``grants``: Microsoft through msal, Google through google-auth, any other provider
through authlib), keeps rotated refresh tokens durably (``chain``), tells a refusal that
needs a person from a failure that passes (``failures``), and bounds how often the
token endpoint is asked. ``login`` gets the first refresh token (``inbox-poller auth
login``). Every library talks through one kind of HTTPS session (``http``), which
verifies certificates with our own context and ``imap.oauth2.ca_file``.
docs/reliability.md §2.8 holds the rules.
"""
