"""The member's own side: activation and sign-in, ``/v1/me`` and the member web page."""
