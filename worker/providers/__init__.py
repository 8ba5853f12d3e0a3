"""Providers: the small interfaces each stage calls, and their vendor and local implementations."""
