"""Code shared by every role: settings, errors, crypto, logging, output."""
