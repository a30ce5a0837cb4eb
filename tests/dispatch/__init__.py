"""Dispatch and the channels: claims, sends, outcomes, faults, soaks."""
