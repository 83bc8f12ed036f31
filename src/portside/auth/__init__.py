"""Authentication and authorization, as a library the server wires in; no HTTP here.

base          Identity, Access, the token scope grammar
htpasswd      passwords in an Apache htpasswd file; `portside user` file management
permissions   who may pull, push, delete what, from plain config data
policy        callers, their grants (kept per process), which repositories listings show them
authenticator credentials to identities: the one cache of Basic logins, the one of bearer tokens
keys          token signing keys and trusted key sets (PEM bundles, JWKS)
tokens        registry bearer tokens (distribution's token specification): issue, verify
refresh       refresh tokens for `offline_token` and the OAuth2 refresh_token grant
ratelimit     failed-login limits per client address and per username, over a shared log
"""
