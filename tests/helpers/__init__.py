"""Helpers the tests share: tiny in-memory models and weights (`tiny_models`), checks for the media readers
(`io_checks`), and a real `imtalker serve` process with its clients' inputs (`server`)."""
