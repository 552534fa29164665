"""Staff accounts of the review UI: users with roles, sessions, API tokens and the audit log."""
