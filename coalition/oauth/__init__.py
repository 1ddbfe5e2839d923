"""OAuth 2.0 authorization server and resource protection (Authlib)."""
