"""The web UI in a real headless Chromium (Debian's chromium and chromium-driver, driven by
selenium), against `portside serve` with htpasswd users and per-team permissions, filled by
skopeo: an anonymous visitor, a login, search as you type, a repository, an image, an index, a
signed image's referrers, a delete that skopeo's tag list then agrees with, and a change without
its CSRF token refused. Each page's screenshot goes to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from portside.auth.htpasswd import add_user

from .clients import OciClient, Skopeo, digest_of, skopeo_for
from .conftest import ServerFactory
from .images import Layout, multi_arch_index
from .server import PortsideServer

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
PASSWORDS: Final = {"alice": "alice-ui-1", "olga": "olga-ui-2", "admin": "admin-ui-3"}
ACCESS: Final = {
    "anonymous_pull": ["public/*"],
    "groups": {"developers": ["alice"], "operators": ["olga"]},
    "rules": [
        {
            "repositories": ["team/*"],
            "groups": ["developers"],
            "actions": ["pull", "push", "delete"],
        },
        {"repositories": ["ops/*"], "groups": ["operators"], "actions": ["pull", "push", "delete"]},
        {"repositories": ["*"], "users": ["admin"], "actions": ["*"]},
    ],
}
SIGNATURE: Final = "application/vnd.dev.cosign.artifact.sig.v1+json"
WAIT: Final = 10.0


@pytest.fixture
def registry(portside_factory: ServerFactory, tmp_path: Path) -> PortsideServer:
    htpasswd = tmp_path / "htpasswd"
    for username, password in PASSWORDS.items():
        add_user(htpasswd, username, password, rounds=4)
    return portside_factory(auth={"htpasswd": {"path": str(htpasswd)}, "access": ACCESS})


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if shutil.which("chromedriver") is None or not Path(CHROMIUM).exists():
        pytest.skip("chromium and chromium-driver are not installed (scripts/install-test-deps)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def push(
    skopeo: Skopeo, layout: Layout, tag: str, destination: str, user: str, *options: str
) -> None:
    creds = f"--dest-creds={user}:{PASSWORDS[user]}"
    skopeo.copy(layout.ref(tag), f"docker://{destination}", creds, *options)


def sign(registry: PortsideServer, name: str, subject: str) -> str:
    """Push a signature of subject (an artifact manifest with `subject`), as cosign does."""
    with httpx.Client(timeout=60, auth=("admin", PASSWORDS["admin"])) as http:
        oci = OciClient(http, registry.url)
        manifest = http.get(
            f"{registry.url}/v2/{name}/manifests/{subject}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        empty = oci.push_blob(name, b"{}")
        payload = oci.push_blob(name, b'{"critical":{"image":{"docker-manifest-digest":"x"}}}')
        document = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": SIGNATURE,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": empty,
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": payload,
                    "size": 53,
                }
            ],
            "subject": {
                "mediaType": manifest.headers["content-type"],
                "digest": subject,
                "size": len(manifest.content),
            },
        }
        body = json.dumps(document).encode()
        return oci.push_manifest(name, digest_of(body), body, document["mediaType"])


def list_tags(skopeo: Skopeo, reference: str) -> list[str]:
    """`skopeo list-tags`, logged in as alice (the repository is her team's, not public)."""
    creds = f"--creds=alice:{PASSWORDS['alice']}"
    listed = skopeo("list-tags", *skopeo.tls_options(), creds, reference)
    tags: list[str] = json.loads(listed.stdout)["Tags"]
    return tags


def shot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def wait_until(driver: Any, condition: Callable[[Any], bool]) -> None:
    # A navigation or an htmx swap replaces the element being read: read it again.
    WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition
    )


def wait_for_text(driver: Any, text: str) -> None:
    wait_until(driver, lambda d: text in _body_text(d))


def _body_text(driver: Any) -> str:
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException as error:
        # chromedriver's other word for a stale element: the body read while a navigation
        # replaced the document. Any other error is the test's.
        if "does not belong to the document" in str(error.msg):
            return ""
        raise


def log_in(driver: Any, registry: PortsideServer, user: str, screenshot: str | None = None) -> None:
    driver.get(f"{registry.url}/ui/login")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[user])
    if screenshot is not None:
        shot(driver, screenshot)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait_for_text(driver, f"Logged in as {user}")


def test_the_web_ui_in_a_real_browser(
    registry: PortsideServer, browser: Any, tmp_path: Path
) -> None:
    skopeo = skopeo_for(tmp_path / "skopeo", registry.host)
    host = registry.host
    hello = Layout(tmp_path / "hello")
    hello.add_image(
        [64 * 1024],
        tag="1.0",
        labels={"org.opencontainers.image.description": "Says hello, publicly"},
    )
    push(skopeo, hello, "1.0", f"{host}/public/hello:1.0", "admin")
    app = Layout(tmp_path / "app")
    app.add_image(
        [256 * 1024, 32 * 1024],
        tag="v1",
        labels={
            "org.opencontainers.image.description": "The team's web application",
            "maintainer": "team <team@example.com>",
        },
    )
    push(skopeo, app, "v1", f"{host}/team/app:v1", "alice")
    push(skopeo, app, "v1", f"{host}/team/app:v2", "alice")
    multi = multi_arch_index(tmp_path / "multi")
    push(skopeo, multi, "multi", f"{host}/team/app:multi", "alice", "--all")
    secret = Layout(tmp_path / "secret")
    secret.add_image([16 * 1024], tag="v1")
    push(skopeo, secret, "v1", f"{host}/ops/secret:v1", "olga")
    v1 = app.tags["v1"].digest
    signature = sign(registry, "team/app", v1)

    # An anonymous visitor: / leads to the UI, which shows what anonymous pull allows.
    browser.get(f"{registry.url}/")
    wait_for_text(browser, "public/hello")
    assert browser.current_url == f"{registry.url}/ui/"
    listing = browser.find_element(By.ID, "results").text
    assert "team/app" not in listing
    assert "ops/secret" not in listing
    shot(browser, "repositories-anonymous")

    # alice logs in; she sees her team's repositories and the public ones, not ops'.
    log_in(browser, registry, "alice", screenshot="login")
    browser.get(f"{registry.url}/ui/")
    listing = browser.find_element(By.ID, "results").text
    assert "team/app" in listing
    assert "public/hello" in listing
    assert "ops/secret" not in listing

    # Search as you type: the results follow the query without a submit.
    box = browser.find_element(By.ID, "q")
    box.send_keys("web appl")
    wait_until(browser, lambda d: "public/hello" not in d.find_element(By.ID, "results").text)
    assert "team/app" in browser.find_element(By.ID, "results").text
    assert "q=web+appl" in browser.current_url
    shot(browser, "search")

    # The repository: its tags, sizes, platforms and pull commands.
    browser.find_element(By.LINK_TEXT, "team/app").click()
    wait_for_text(browser, "Tags")
    page = browser.find_element(By.TAG_NAME, "main").text
    for shown in (
        "multi",
        "v1",
        "v2",
        "linux/amd64, linux/arm64",
        f"podman pull {host}/team/app:v1",
    ):
        assert shown in page, shown
    copy = browser.find_elements(By.CSS_SELECTOR, "button.copy")
    assert copy
    assert copy[0].is_displayed()  # the script showed the copy buttons
    shot(browser, "repository")

    # An image: layers, config, and its referrer (the signature).
    browser.get(f"{registry.url}/ui/images/team/app@{v1}")
    wait_for_text(browser, "Layers")
    page = browser.find_element(By.TAG_NAME, "main").text
    for shown in ("Config", "PATH=/usr/bin:/bin", "maintainer", "e2e layer 1", SIGNATURE):
        assert shown in page, shown
    browser.find_element(By.PARTIAL_LINK_TEXT, signature[:19]).click()
    wait_for_text(browser, "Artifact")
    assert v1[:19] in browser.find_element(By.TAG_NAME, "main").text  # its subject
    browser.back()
    wait_for_text(browser, "Referrers")
    browser.execute_script("document.getElementById('referrers').scrollIntoView()")
    shot(browser, "image")

    # The index: its platforms, each a link to its manifest.
    index = multi.tags["multi"].digest
    browser.get(f"{registry.url}/ui/images/team/app@{index}")
    wait_for_text(browser, "Platforms")
    shot(browser, "index")
    arm64 = next(
        d for d, i in multi.images.items() if "arm64" in multi.read_blob(i.config.digest).decode()
    )
    browser.find_element(By.CSS_SELECTOR, f"a[href$='{arm64}']").click()
    wait_for_text(browser, "linux/arm64")
    assert "Layers" in browser.find_element(By.TAG_NAME, "main").text

    # A change without the CSRF token is refused, even from the page itself.
    status = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch('/ui/delete', {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/x-www-form-urlencoded'},
            body: 'repository=team/app&reference=v2'}).then(r => done(r.status));
        """
    )
    assert status == 403
    assert "v2" in list_tags(skopeo, f"docker://{host}/team/app")

    # Deleting a tag: a confirmation, then skopeo's tag list no longer has it.
    browser.get(f"{registry.url}/ui/repositories/team/app")
    browser.find_element(By.CSS_SELECTOR, "a[aria-label='Delete the tag v2']").click()
    wait_for_text(browser, "Delete the tag v2?")
    shot(browser, "delete")
    browser.find_element(By.CSS_SELECTOR, "form.confirm button[type=submit]").click()
    wait_for_text(browser, "Deleted v2.")
    tags = list_tags(skopeo, f"docker://{host}/team/app")
    assert sorted(tags) == ["multi", "v1"]

    # Usage is for those who may pull everything: alice is refused, admin sees it.
    browser.get(f"{registry.url}/ui/usage")
    wait_for_text(browser, "Not allowed")
    browser.find_element(By.CSS_SELECTOR, ".account button").click()  # log out
    wait_for_text(browser, "Log in")
    log_in(browser, registry, "admin")
    browser.get(f"{registry.url}/ui/usage")
    wait_for_text(browser, "By namespace")
    page = browser.find_element(By.TAG_NAME, "main").text
    for shown in ("team/", "ops/", "public/"):
        assert shown in page, shown
    shot(browser, "usage")

    # Readable on a phone: the tag table becomes cards.
    browser.set_window_size(390, 844)
    browser.get(f"{registry.url}/ui/repositories/team/app")
    wait_for_text(browser, "Tags")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390 + 1  # nothing wider than the screen
    shot(browser, "repository-phone")
