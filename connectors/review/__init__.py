"""The support team's review UI and API: sign-in, conversation search, transcripts,
corrections, and live takeover (``connectors.review.ui.ReviewUI`` wires it into the app)."""
