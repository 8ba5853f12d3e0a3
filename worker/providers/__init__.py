"""Providers: the small interfaces each stage calls, and their intron, invox and local implementations."""
