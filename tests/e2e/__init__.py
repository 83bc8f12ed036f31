"""End-to-end tests: `portside serve` as a real process, driven by skopeo, podman and httpx."""
