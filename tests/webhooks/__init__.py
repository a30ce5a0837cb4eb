"""Twilio's callbacks and replies."""
