"""Tests of portside.upstream, the client of other registries, against real registries on
loopback (CNCF distribution, Portside's token service) and small fake servers."""
