"""Partner onboarding and the partner-facing transaction API."""
