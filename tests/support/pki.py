"""The throwaway PKI the tests use is the demo's (``lifeboat.demo.pki``)."""

from lifeboat.demo.pki import CertPair, Pki, make_pki

__all__ = ["CertPair", "Pki", "make_pki"]
