"""Reminder sequences."""
