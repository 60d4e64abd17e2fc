"""Modules under aiopquic 0.6.1's ``aiopquic._binding`` import paths.

In 0.6.1 these were Cython extensions; here they are adapters or plain Python with the same
names and behaviour, so programs written for 0.6.1 (aiomoqt above all) import them unchanged.
"""
