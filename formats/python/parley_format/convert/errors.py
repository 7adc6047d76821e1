"""Errors raised by the Hugging Face -> Parley converter."""

from __future__ import annotations


class ConversionError(ValueError):
    """The checkpoint cannot be converted faithfully. The message names the
    architecture, option or tensor at fault; nothing has been written."""


class UnsupportedError(ConversionError):
    """An architecture or config option Parley's model cannot represent."""
