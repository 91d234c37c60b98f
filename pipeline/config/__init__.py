"""Tessera's settings: declared once each, read from defaults < environment < flags."""
