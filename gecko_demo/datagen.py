"""Deterministic synthetic data shaped like Gecko Advisor's (schema reference §8).

Everything here is pure: a seeded :class:`random.Random`, a caller-supplied
``now`` and no I/O. :mod:`gecko_demo.seed` bulk-loads the rows and
:mod:`gecko_demo.workload` uses the same generators for live traffic.

Timestamps are naive UTC datetimes with millisecond precision, as Prisma
writes ``TIMESTAMP(3)`` columns.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

Status = Literal["queued", "running", "done", "error"]
STATUSES: Final[tuple[Status, ...]] = ("queued", "running", "done", "error")

SCAN_COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "targetType",
    "input",
    "normalizedInput",
    "status",
    "score",
    "label",
    "progress",
    "summary",
    "startedAt",
    "finishedAt",
    "slug",
    "source",
    "dedupeOfId",
    "shareMessage",
    "meta",
    "userId",
    "isPublic",
    "isProScan",
    "scannerIp",
    "createdAt",
    "updatedAt",
)
EVIDENCE_COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "scanId",
    "kind",
    "severity",
    "title",
    "details",
    "createdAt",
)
ISSUE_COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "scanId",
    "key",
    "severity",
    "category",
    "title",
    "summary",
    "howToFix",
    "whyItMatters",
    "references",
    "sortWeight",
    "createdAt",
    "updatedAt",
)
USER_COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "email",
    "name",
    "passwordHash",
    "emailVerified",
    "authMethod",
    "subscription",
    "subscriptionStatus",
    "apiCallsMonth",
    "createdAt",
    "updatedAt",
)
CACHED_LIST_COLUMNS: Final[tuple[str, ...]] = ("id", "source", "version", "fetchedAt", "data")

HISTORY: Final = timedelta(days=90)
DEDUPE_WINDOW: Final = timedelta(minutes=15)  # CACHE_TTL_MS default

ERROR_SUMMARIES: Final[tuple[str, ...]] = (
    "Scan timed out before completion.",
    "Scan failed due to a processing error.",
    "Scan failed after multiple retries.",
)
NO_RISK_SUMMARY: Final = "No major privacy risks detected."

SECURITY_HEADERS: Final[tuple[str, ...]] = (
    "content-security-policy",
    "strict-transport-security",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
)

# (host, registrable root, is a tracker root, fingerprints)
_THIRD_PARTY_HOSTS: Final[tuple[tuple[str, str, bool, bool], ...]] = (
    ("fonts.googleapis.com", "googleapis.com", False, False),
    ("fonts.gstatic.com", "gstatic.com", False, False),
    ("ajax.googleapis.com", "googleapis.com", False, False),
    ("cdn.jsdelivr.net", "jsdelivr.net", False, False),
    ("cdnjs.cloudflare.com", "cloudflare.com", False, False),
    ("unpkg.com", "unpkg.com", False, False),
    ("use.typekit.net", "typekit.net", False, False),
    ("js.stripe.com", "stripe.com", False, False),
    ("cdn.shopify.com", "shopify.com", False, False),
    ("www.youtube.com", "youtube.com", False, False),
    ("i.ytimg.com", "ytimg.com", False, False),
    ("player.vimeo.com", "vimeo.com", False, False),
    ("s3.amazonaws.com", "amazonaws.com", False, False),
    ("cdn.cookielaw.org", "cookielaw.org", False, False),
    ("static.cloudflareinsights.com", "cloudflareinsights.com", False, False),
    ("widget.intercom.io", "intercom.io", False, False),
    ("js.hs-scripts.com", "hs-scripts.com", False, False),
    ("www.recaptcha.net", "recaptcha.net", False, False),
    ("www.googletagmanager.com", "googletagmanager.com", True, False),
    ("www.google-analytics.com", "google-analytics.com", True, False),
    ("region1.google-analytics.com", "google-analytics.com", True, False),
    ("stats.g.doubleclick.net", "doubleclick.net", True, False),
    ("securepubads.g.doubleclick.net", "doubleclick.net", True, False),
    ("pagead2.googlesyndication.com", "googlesyndication.com", True, False),
    ("connect.facebook.net", "facebook.net", True, False),
    ("static.hotjar.com", "hotjar.com", True, True),
    ("cdn.segment.com", "segment.com", True, False),
    ("bat.bing.com", "bing.com", True, False),
    ("snap.licdn.com", "licdn.com", True, False),
    ("sb.scorecardresearch.com", "scorecardresearch.com", True, False),
    ("cdn.taboola.com", "taboola.com", True, False),
    ("widgets.outbrain.com", "outbrain.com", True, False),
    ("ib.adnxs.com", "adnxs.com", True, False),
    ("fastlane.rubiconproject.com", "rubiconproject.com", True, False),
    ("static.criteo.net", "criteo.net", True, False),
    ("c.amazon-adsystem.com", "amazon-adsystem.com", True, False),
    ("cdn.mxpnl.com", "mxpnl.com", True, False),
    ("edge.fullstory.com", "fullstory.com", True, True),
    ("js-agent.newrelic.com", "newrelic.com", True, False),
    ("www.clarity.ms", "clarity.ms", True, True),
    ("fpnpmcdn.net", "fpnpmcdn.net", True, True),
    ("pixel.quantserve.com", "quantserve.com", True, False),
)

_PLAIN_HOSTS: Final = tuple(h for h in _THIRD_PARTY_HOSTS if not h[2])
_TRACKER_HOSTS: Final = tuple(h for h in _THIRD_PARTY_HOSTS if h[2])

_POPULAR_SITES: Final[tuple[str, ...]] = (
    "example.com",
    "wikipedia.org",
    "github.com",
    "nytimes.com",
    "bbc.co.uk",
    "theguardian.com",
    "reddit.com",
    "stackoverflow.com",
    "medium.com",
    "shopify.com",
    "etsy.com",
    "ebay.com",
    "booking.com",
    "airbnb.com",
    "spotify.com",
    "netflix.com",
    "zoom.us",
    "slack.com",
    "notion.so",
    "figma.com",
    "dropbox.com",
    "mozilla.org",
    "duckduckgo.com",
    "protonmail.com",
    "signal.org",
    "wordpress.com",
    "substack.com",
    "cnn.com",
    "forbes.com",
    "wired.com",
    "theverge.com",
    "techcrunch.com",
    "arstechnica.com",
    "imdb.com",
    "weather.com",
    "espn.com",
    "nike.com",
    "ikea.com",
    "walmart.com",
    "target.com",
    "bestbuy.com",
    "zalando.de",
    "spiegel.de",
    "lemonde.fr",
    "elpais.com",
    "corriere.it",
    "nu.nl",
    "yle.fi",
    "abc.net.au",
    "cbc.ca",
    "coinbase.com",
    "kraken.com",
    "binance.com",
    "uniswap.org",
    "opensea.io",
    "metamask.io",
    "phantom.app",
    "solana.com",
    "ethereum.org",
    "privacyguides.org",
)
_WORDS_A: Final[tuple[str, ...]] = (
    "blue",
    "north",
    "green",
    "silver",
    "urban",
    "happy",
    "bright",
    "quiet",
    "rapid",
    "clever",
    "golden",
    "little",
    "modern",
    "wild",
    "sunny",
    "cedar",
    "maple",
    "river",
    "stone",
    "copper",
    "pixel",
    "cloud",
    "ocean",
    "alpine",
    "prairie",
    "harbor",
    "lunar",
    "solar",
    "velvet",
    "amber",
)
_WORDS_B: Final[tuple[str, ...]] = (
    "coffee",
    "outdoors",
    "books",
    "labs",
    "studio",
    "garden",
    "bikes",
    "kitchen",
    "travel",
    "health",
    "finance",
    "games",
    "press",
    "market",
    "pets",
    "design",
    "homes",
    "tools",
    "fitness",
    "audio",
    "wallet",
    "dao",
    "swap",
    "news",
    "shop",
    "apparel",
    "academy",
    "clinic",
    "legal",
    "foods",
)
_TLDS: Final[tuple[str, ...]] = (
    "com",
    "com",
    "com",
    "com",
    "io",
    "co",
    "net",
    "org",
    "de",
    "co.uk",
    "fr",
    "app",
    "dev",
)
_PATHS: Final[tuple[str, ...]] = (
    "/blog/",
    "/pricing",
    "/about",
    "/contact",
    "/products/",
    "/privacy",
    "/login",
    "/careers",
)
_COOKIE_NAMES: Final[tuple[str, ...]] = (
    "_ga",
    "_gid",
    "_fbp",
    "sessionid",
    "PHPSESSID",
    "__cf_bm",
    "_hjSessionUser",
    "cart",
    "locale",
    "ajs_anonymous_id",
    "_gcl_au",
    "csrftoken",
)
_PSL_SAMPLE: Final = [
    "com", "net", "org", "io", "app", "dev", "de", "fr", "co.uk", "org.uk", "com.au",
    "co.jp", "github.io", "herokuapp.com", "blogspot.com",
]  # fmt: skip
_NANOID_ALPHABET: Final = string.ascii_letters + string.digits + "_-"
_BASE36: Final = string.digits + string.ascii_lowercase
_BASE36_PAIRS: Final = tuple(a + b for a in _BASE36 for b in _BASE36)
_JSON: Final = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class IssueRule:
    key: str
    severity: str
    category: str
    sort_weight: int
    title: str
    how_to_fix: str
    why_it_matters: str
    reference_label: str
    reference_url: str


# scoring.ts table (§8): at most one issue per key, so at most 8 per scan.
ISSUE_RULES: Final[dict[str, IssueRule]] = {
    r.key: r
    for r in (
        IssueRule(
            "tracking.trackers",
            "high",
            "tracking",
            10,
            "Third-party trackers detected",
            "Remove analytics and advertising tags you do not need, or load them only after"
            " the visitor gives consent.",
            "Trackers follow visitors across sites and build behavioural profiles without"
            " their knowledge.",
            "EFF: Behind the One-Way Mirror",
            "https://www.eff.org/wp/behind-the-one-way-mirror",
        ),
        IssueRule(
            "tracking.fingerprinting",
            "high",
            "tracking",
            15,
            "Browser fingerprinting scripts",
            "Drop fingerprinting libraries; use consented first-party session cookies for"
            " fraud checks instead.",
            "Fingerprinting identifies visitors even when they clear cookies or use private"
            " browsing.",
            "MDN: Fingerprinting",
            "https://developer.mozilla.org/en-US/docs/Glossary/Fingerprinting",
        ),
        IssueRule(
            "security.mixed-content",
            "high",
            "security",
            18,
            "Mixed content on HTTPS pages",
            "Serve every script, style and image over HTTPS and add"
            " upgrade-insecure-requests to the CSP.",
            "Insecure sub-resources can be read or altered by anyone on the network path.",
            "MDN: Mixed content",
            "https://developer.mozilla.org/en-US/docs/Web/Security/Mixed_content",
        ),
        IssueRule(
            "security.headers",
            "medium",
            "security",
            20,
            "Security headers missing",
            "Send Content-Security-Policy, Strict-Transport-Security, X-Frame-Options,"
            " X-Content-Type-Options and Referrer-Policy.",
            "Missing headers leave visitors open to clickjacking, content sniffing and"
            " referrer leaks.",
            "OWASP Secure Headers Project",
            "https://owasp.org/www-project-secure-headers/",
        ),
        IssueRule(
            "security.tls",
            "medium",
            "security",
            25,
            "Weak or missing HTTPS",
            "Redirect all HTTP traffic to HTTPS with a valid certificate and enable HSTS.",
            "Without TLS, form data and cookies travel in clear text and can be tampered with.",
            "Mozilla: Server Side TLS",
            "https://wiki.mozilla.org/Security/Server_Side_TLS",
        ),
        IssueRule(
            "tracking.third-party",
            "medium",
            "tracking",
            30,
            "Many third-party requests",
            "Self-host fonts and libraries and remove embeds that are not essential to the page.",
            "Each third-party request shares the visitor's IP address and browsing context"
            " with another company.",
            "web.dev: Third-party JavaScript",
            "https://web.dev/articles/optimizing-content-efficiency-loading-third-party-javascript",
        ),
        IssueRule(
            "security.cookies",
            "medium",
            "security",
            35,
            "Cookies without Secure or SameSite",
            "Set the Secure, HttpOnly and SameSite attributes on every cookie the site issues.",
            "Cookies without these flags can leak over plain HTTP or be sent in cross-site"
            " requests.",
            "MDN: Set-Cookie",
            "https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie",
        ),
        IssueRule(
            "compliance.policy",
            "low",
            "compliance",
            60,
            "No privacy policy link",
            "Link a privacy policy from every page footer that explains what is collected and why.",
            "Visitors and regulators expect a policy describing data collection and sharing.",
            "GDPR Article 13",
            "https://gdpr-info.eu/art-13-gdpr/",
        ),
    )
}


# -- value objects -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Evidence:
    kind: str
    severity: int
    title: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Issue:
    key: str
    severity: str
    category: str
    title: str
    summary: str
    how_to_fix: str
    why_it_matters: str
    references: list[dict[str, str]]
    sort_weight: int


@dataclass(frozen=True, slots=True)
class Findings:
    """What the worker computes for one crawled site."""

    evidence: list[Evidence]
    issues: list[Issue]
    score: int
    label: str
    summary: str
    meta: dict[str, Any]
    pages: int


@dataclass(frozen=True, slots=True)
class Submission:
    """A scan request as the backend receives it."""

    target_type: str  # url | app | address
    input: str
    normalized_input: str | None


@dataclass(slots=True)
class GeneratedScan:
    id: str
    target_type: str
    input: str
    normalized_input: str | None
    status: Status
    score: int | None
    label: str | None
    progress: int
    summary: str | None
    started_at: datetime | None
    finished_at: datetime | None
    slug: str
    source: str
    meta: dict[str, Any] | None
    user_id: str | None
    scanner_ip: str | None
    created_at: datetime
    updated_at: datetime
    evidence: list[tuple[str, Evidence]] = field(default_factory=list)  # (id, evidence)
    issues: list[tuple[str, Issue]] = field(default_factory=list)  # (id, issue)
    evidence_created_at: datetime | None = None
    issues_created_at: datetime | None = None

    def scan_row(self) -> tuple[Any, ...]:
        """Values in :data:`SCAN_COLUMNS` order (JSON serialised)."""
        return (
            self.id,
            self.target_type,
            self.input,
            self.normalized_input,
            self.status,
            self.score,
            self.label,
            self.progress,
            self.summary,
            self.started_at,
            self.finished_at,
            self.slug,
            self.source,
            None,  # dedupeOfId: never written by the app
            None,  # shareMessage: never written by the app
            None if self.meta is None else to_json(self.meta),
            self.user_id,
            True,
            False,
            self.scanner_ip,
            self.created_at,
            self.updated_at,
        )

    def evidence_rows(self) -> Iterator[tuple[Any, ...]]:
        """Values in :data:`EVIDENCE_COLUMNS` order."""
        for ev_id, ev in self.evidence:
            yield (
                ev_id,
                self.id,
                ev.kind,
                ev.severity,
                ev.title,
                to_json(ev.details),
                self.evidence_created_at,
            )

    def issue_rows(self) -> Iterator[tuple[Any, ...]]:
        """Values in :data:`ISSUE_COLUMNS` order."""
        ts = self.issues_created_at
        for issue_id, iss in self.issues:
            yield (
                issue_id,
                self.id,
                iss.key,
                iss.severity,
                iss.category,
                iss.title,
                iss.summary,
                iss.how_to_fix,
                iss.why_it_matters,
                to_json(iss.references),
                iss.sort_weight,
                ts,
                ts,
            )


@dataclass(frozen=True, slots=True)
class _Site:
    host: str
    https: bool
    pages: int
    missing_headers: tuple[str, ...]
    bad_cookies_per_page: float
    policy: bool
    third_parties: tuple[tuple[str, str, bool, bool], ...]
    fingerprint_pages: float
    mixed_content: bool


def to_json(value: object) -> str:
    """Compact JSON as Prisma stores it (key order preserved)."""
    return _JSON.encode(value)


def label_for(score: int) -> str:
    """``Safe`` >= 80, ``Caution`` 50..79, ``High Risk`` < 50."""
    if score >= 80:
        return "Safe"
    if score >= 50:
        return "Caution"
    return "High Risk"


def ms(ts: datetime) -> datetime:
    """Truncate to milliseconds (TIMESTAMP(3))."""
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def _base36(value: int, width: int) -> str:
    """``value`` mod 36**width as ``width`` base-36 digits (``width`` even)."""
    pairs = []
    for _ in range(width // 2):
        value, rem = divmod(value, 1296)
        pairs.append(_BASE36_PAIRS[rem])
    return "".join(reversed(pairs))


class IdFactory:
    """cuid (v1)-shaped ids: ``c`` + time + counter + fingerprint + random, 25 chars."""

    def __init__(self, rng: random.Random, fingerprint: str) -> None:
        self._rng = rng
        self._counter = rng.randrange(36**4)
        self._fingerprint = fingerprint
        self._last: tuple[datetime, str] | None = None

    def __call__(self, at: datetime) -> str:
        self._counter = (self._counter + 1) % 36**4
        if self._last is None or self._last[0] != at:
            self._last = (at, "c" + _base36(int(at.replace(tzinfo=UTC).timestamp() * 1000), 8))
        return (
            self._last[1]
            + _base36(self._counter, 4)
            + self._fingerprint
            + _base36(self._rng.getrandbits(41), 8)
        )


class SlugFactory:
    """8-character nanoid slugs, unique within this factory."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._seen: set[str] = set()

    def __call__(self) -> str:
        while True:
            slug = "".join(self._rng.choices(_NANOID_ALPHABET, k=8))
            if slug not in self._seen:
                self._seen.add(slug)
                return slug


def _site_hosts(count: int, rng: random.Random) -> list[str]:
    hosts = list(_POPULAR_SITES)
    seen = set(hosts)
    while len(hosts) < count:
        host = f"{rng.choice(_WORDS_A)}-{rng.choice(_WORDS_B)}.{rng.choice(_TLDS)}"
        if host not in seen:
            seen.add(host)
            hosts.append(host)
    return hosts


class DataGenerator:
    """Seeded generator of Scan/Evidence/Issue/User/CachedList rows.

    ``now`` anchors every timestamp; two generators with the same ``seed``
    and ``now`` produce identical rows.
    """

    def __init__(
        self, seed: int, *, now: datetime, site_count: int = 2000, site_seed: int | None = None
    ) -> None:
        if now.tzinfo is not None:
            raise ValueError("now must be a naive UTC datetime (TIMESTAMP(3) semantics)")
        self.seed = seed
        # Sites (host pool, popularity, per-site findings) may come from another
        # seed, so live traffic scans the same sites as the loaded data.
        self.site_seed = seed if site_seed is None else site_seed
        self.now = ms(now)
        self.rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data
        self._backend_id = IdFactory(self.rng, "bk7q")
        self._worker_id = IdFactory(self.rng, "wk3m")
        self.new_slug = SlugFactory(self.rng)
        host_rng = random.Random(f"hosts:{self.site_seed}")  # noqa: S311
        self.hosts = _site_hosts(site_count, host_rng)
        # Zipf-like popularity: a few sites are scanned over and over.
        self._weights = [1.0 / (rank + 8) ** 1.15 for rank in range(len(self.hosts))]
        self._cum_weights: list[float] = []
        total = 0.0
        for w in self._weights:
            total += w
            self._cum_weights.append(total)
        self._sites: dict[str, _Site] = {}
        self._ips = [
            f"{net}.{i}" for net in ("192.0.2", "198.51.100", "203.0.113") for i in range(1, 255)
        ]
        self.user_ids: list[str] = []

    # -- ids ------------------------------------------------------------
    def new_scan_id(self, at: datetime) -> str:
        return self._backend_id(at)

    def new_child_id(self, at: datetime) -> str:
        """Evidence/Issue ids (made by the worker process)."""
        return self._worker_id(at)

    # -- sites and submissions -------------------------------------------
    def _site(self, host: str) -> _Site:
        site = self._sites.get(host)
        if site is None:
            site = self._make_site(host)
            self._sites[host] = site
        return site

    def _make_site(self, host: str) -> _Site:
        r = random.Random(f"site:{self.site_seed}:{host}")  # noqa: S311
        https = r.random() >= 0.06
        pages = r.choices((1, 2, 3, 4, 5, 6, 8, 10), weights=(44, 18, 12, 9, 6, 5, 3, 3))[0]
        n_missing = r.choices((0, 1, 2, 3, 4, 5), weights=(14, 24, 28, 20, 9, 5))[0]
        missing = tuple(sorted(r.sample(SECURITY_HEADERS, n_missing)))
        bad_cookies = r.choices((0.0, 0.3, 1.0, 2.0), weights=(50, 25, 18, 7))[0]
        # Third parties: most sites load a handful, a long tail loads dozens.
        n_plain = r.choices((0, 1, 2, 3, 4, 6, 9), weights=(22, 20, 18, 14, 12, 9, 5))[0]
        n_trackers = r.choices((0, 1, 2, 3, 5, 8, 12), weights=(38, 20, 14, 11, 9, 5, 3))[0]
        third = [*r.sample(_PLAIN_HOSTS, n_plain), *r.sample(_TRACKER_HOSTS, n_trackers)]
        extra = max(0, int(r.paretovariate(1.6) * 3) - 12)  # ad-tech and image CDN shards
        for i in range(min(extra, 250)):
            root = r.choice(("adnxs.com", "doubleclick.net", "akamaihd.net", "cloudfront.net"))
            third.append(
                (
                    f"s{i}-{r.randrange(10_000)}.{root}",
                    root,
                    root in {"adnxs.com", "doubleclick.net"},
                    False,
                )
            )
        fingerprint = r.choices((0.0, 0.2, 0.6), weights=(86, 9, 5))[0]
        return _Site(
            host=("www." + host) if r.random() < 0.4 else host,
            https=https,
            pages=pages,
            missing_headers=missing,
            bad_cookies_per_page=bad_cookies,
            policy=r.random() < 0.72,
            third_parties=tuple(third),
            fingerprint_pages=fingerprint,
            mixed_content=https and r.random() < 0.003,
        )

    def pick_host(self) -> str:
        return self.rng.choices(self.hosts, cum_weights=self._cum_weights)[0]

    def url_submission(self, host: str | None = None) -> Submission:
        """A raw URL as typed by a user, and its ``normalizeUrl()`` form."""
        host = host or self.pick_host()
        site = self._site(host)
        r = self.rng
        path = "/" if r.random() < 0.85 else r.choice(_PATHS)
        scheme = "https" if site.https else "http"
        normalized = f"{scheme}://{site.host}{path}"
        shown_host = site.host if r.random() < 0.8 else site.host.capitalize()
        variant = r.random()
        if variant < 0.45:
            raw = f"{shown_host}{'' if path == '/' else path}"
            if not site.https:
                raw = f"http://{raw}"
        elif variant < 0.8:
            raw = f"{scheme}://{shown_host}{path}"
        elif variant < 0.9:
            raw = f"{scheme}://{shown_host}{path}#top"
        else:
            port = 443 if site.https else 80
            raw = f"{scheme}://{shown_host}:{port}{path}"
        return Submission("url", raw, normalized)

    def stub_submission(self) -> Submission:
        if self.rng.random() < 0.6:
            return Submission("address", f"0x{self.rng.getrandbits(160):040x}", None)
        app = f"com.{self.rng.choice(_WORDS_A)}{self.rng.choice(_WORDS_B)}.app"
        return Submission("app", app, None)

    def scanner_ip(self) -> str | None:
        return None if self.rng.random() < 0.15 else self.rng.choice(self._ips)

    # -- the worker's crawl -------------------------------------------------
    def crawl(self, normalized_input: str) -> Findings:
        """Evidence, issues, score, label, summary and meta for one URL scan."""
        host = normalized_input.split("://", 1)[-1].split("/", 1)[0]
        bare = host.removeprefix("www.")
        site = self._site(bare)
        r = self.rng
        pages = max(1, min(10, site.pages + r.choice((-1, 0, 0, 0, 1))))
        evidence: list[Evidence] = []
        for _page in range(pages):
            evidence.extend(
                Evidence("header", 2, f"Missing header: {name}", {"name": name})
                for name in site.missing_headers
            )
        cookie_rows = 0
        for _page in range(pages):
            n = int(site.bad_cookies_per_page) + (r.random() < site.bad_cookies_per_page % 1)
            for _ in range(n):
                name = r.choice(_COOKIE_NAMES)
                value = f"{r.getrandbits(48):x}"
                evidence.append(
                    Evidence(
                        "cookie",
                        2,
                        "Cookie lacks Secure/SameSite",
                        {"cookie": f"{name}={value}; Path=/; Max-Age=31536000"},
                    )
                )
                cookie_rows += 1
        grade = "A" if site.https else "C"
        evidence.append(Evidence("tls", 1, f"TLS grade {grade}", {"grade": grade}))
        if site.policy:
            scheme = "https" if site.https else "http"
            evidence.append(
                Evidence(
                    "policy",
                    1,
                    "Privacy policy link detected",
                    {"href": f"{scheme}://{site.host}/privacy"},
                )
            )
        third = [tp for tp in site.third_parties if r.random() < 0.93]
        trackers: dict[str, bool] = {}
        for tp_host, root, is_tracker, fp in third:
            evidence.append(
                Evidence(
                    "thirdparty",
                    2,
                    f"Third-party request: {tp_host}",
                    {"domain": tp_host, "root": root, "fingerprinting": fp},
                )
            )
            if is_tracker:
                trackers[root] = trackers.get(root, False) or fp
        evidence.extend(
            Evidence(
                "tracker", 3, f"Tracker matched: {root}", {"domain": root, "fingerprinting": fp}
            )
            for root, fp in trackers.items()
        )
        fingerprint_rows = sum(r.random() < site.fingerprint_pages for _ in range(pages))
        evidence.extend(
            Evidence("fingerprint", 3, "Possible browser fingerprinting", {})
            for _ in range(fingerprint_rows)
        )
        if site.mixed_content:
            evidence.append(Evidence("insecure", 3, "Mixed content request", {}))

        third_domains = sorted({tp[0] for tp in third})
        meta: dict[str, Any] = {
            "trackerDomains": sorted(trackers),
            "thirdPartyDomains": third_domains,
            "missingHeaders": list(site.missing_headers),
            "cookieIssues": cookie_rows,
            "policyFound": site.policy,
            "tlsGrade": grade,
            "fingerprintDetected": fingerprint_rows > 0,
            "mixedContent": site.mixed_content,
        }
        score = 100
        score -= min(30, 6 * len(trackers))
        score -= min(10, max(0, len(third_domains) - 5))
        score -= min(15, 3 * len(site.missing_headers))
        score -= min(10, 2 * cookie_rows)
        score -= 20 if grade != "A" else 0
        score -= 0 if site.policy else 8
        score -= 15 if fingerprint_rows >= 3 else 5 if fingerprint_rows else 0
        score -= 10 if site.mixed_content else 0
        if site.policy and grade == "A" and not trackers:
            score += 5
        score = max(0, min(100, score))

        issues = self._issues(
            trackers=len(trackers),
            fingerprint_rows=fingerprint_rows,
            mixed=site.mixed_content,
            missing=len(site.missing_headers),
            grade=grade,
            third_party=len(third_domains),
            cookie_rows=cookie_rows,
            policy=site.policy,
        )
        parts: list[str] = []
        if trackers:
            parts.append(f"{len(trackers)} tracker{'s' if len(trackers) != 1 else ''} flagged")
        if site.missing_headers:
            parts.append(f"{len(site.missing_headers)} security headers missing")
        if cookie_rows:
            parts.append(f"{cookie_rows} insecure cookies")
        if grade != "A":
            parts.append("no HTTPS")
        if not site.policy:
            parts.append("no privacy policy found")
        summary = "; ".join(parts) if parts else NO_RISK_SUMMARY
        return Findings(evidence, issues, score, label_for(score), summary, meta, pages)

    @staticmethod
    def _issues(
        *,
        trackers: int,
        fingerprint_rows: int,
        mixed: bool,
        missing: int,
        grade: str,
        third_party: int,
        cookie_rows: int,
        policy: bool,
    ) -> list[Issue]:
        hits: list[tuple[str, str, str | None]] = []  # key, summary, severity override
        if trackers:
            noun = "domain loads" if trackers == 1 else "domains load"
            hits.append(("tracking.trackers", f"{trackers} tracking {noun} on the page.", None))
        if fingerprint_rows >= 3:
            hits.append(
                (
                    "tracking.fingerprinting",
                    f"Fingerprinting signals on {fingerprint_rows} pages.",
                    None,
                )
            )
        if mixed:
            hits.append(("security.mixed-content", "Some resources load over plain HTTP.", None))
        if missing:
            hits.append(("security.headers", f"{missing} recommended headers are not sent.", None))
        if grade != "A":
            hits.append(
                (
                    "security.tls",
                    f"TLS grade {grade}: the site is served over HTTP.",
                    "high" if grade == "F" else None,
                )
            )
        if third_party > 5:
            hits.append(
                ("tracking.third-party", f"Requests go to {third_party} third-party domains.", None)
            )
        if cookie_rows:
            hits.append(
                ("security.cookies", f"{cookie_rows} cookies lack Secure or SameSite.", None)
            )
        if not policy:
            hits.append(("compliance.policy", "No link to a privacy policy was found.", None))
        issues = []
        for key, summary, severity in hits:
            rule = ISSUE_RULES[key]
            issues.append(
                Issue(
                    key=key,
                    severity=severity or rule.severity,
                    category=rule.category,
                    title=rule.title,
                    summary=summary,
                    how_to_fix=rule.how_to_fix,
                    why_it_matters=rule.why_it_matters,
                    references=[{"label": rule.reference_label, "url": rule.reference_url}],
                    sort_weight=rule.sort_weight,
                )
            )
        return issues

    # -- whole scans ----------------------------------------------------------
    def _timeline(self, count: int) -> list[datetime]:
        start = self.now - HISTORY
        span = (HISTORY - timedelta(seconds=30)).total_seconds()
        offsets = sorted(self.rng.random() * span for _ in range(count))
        return [ms(start + timedelta(seconds=o)) for o in offsets]

    def _status(self, index: int, count: int) -> Status:
        from_end = count - 1 - index
        if from_end < 3:  # the newest submissions are still waiting for a worker
            return "queued"
        if from_end < 5:
            return "running"
        x = self.rng.random()
        if x < 0.0004:  # left behind by a worker or Redis outage
            return "queued"
        if x < 0.0008:
            return "running"
        if x < 0.0358:
            return "error"
        return "done"

    def scan(self, created_at: datetime, status: Status, *, stub: bool = False) -> GeneratedScan:
        """One scan created at ``created_at`` that has reached ``status``."""
        r = self.rng
        sub = self.stub_submission() if stub else self.url_submission()
        scan = GeneratedScan(
            id=self.new_scan_id(created_at),
            target_type=sub.target_type,
            input=sub.input,
            normalized_input=sub.normalized_input,
            status=status,
            score=None,
            label=None,
            progress=0,
            summary=None,
            started_at=None,
            finished_at=None,
            slug=self.new_slug(),
            source="stub" if stub else ("manual-force" if r.random() < 0.06 else "manual"),
            meta=None,
            user_id=(r.choice(self.user_ids) if self.user_ids and r.random() < 0.03 else None),
            scanner_ip=self.scanner_ip(),
            created_at=created_at,
            updated_at=created_at,
        )
        if stub:
            scan.status = "done"
            scan.score = r.choice((75, 80))
            scan.label = label_for(scan.score)
            scan.progress = 100
            scan.summary = f"{sub.target_type.capitalize()} scans use a preliminary check."
            if sub.target_type == "address":
                scan.meta = {"chain": "evm" if sub.input.startswith("0x") else "solana"}
            scan.started_at = scan.finished_at = created_at
            return scan
        if status == "queued":
            return scan
        scan.started_at = ms(created_at + timedelta(milliseconds=r.randint(150, 3000)))
        if status == "running":
            scan.progress = r.choice((10, 20, 30, 40, 50, 60, 70, 75, 90))
            scan.updated_at = ms(scan.started_at + timedelta(milliseconds=r.randint(200, 4000)))
            return scan
        if status == "error":
            timeout = r.random() < 0.5
            scan.finished_at = ms(
                scan.started_at
                + timedelta(milliseconds=60_000 if timeout else r.randint(800, 9000))
            )
            scan.summary = ERROR_SUMMARIES[0] if timeout else r.choice(ERROR_SUMMARIES[1:])
            scan.progress = r.choice((10, 20, 30, 70))
            scan.updated_at = scan.finished_at
            return scan
        if sub.normalized_input is None:  # pragma: no cover - URL submissions always have one
            raise ValueError("a URL scan needs a normalized input")
        findings = self.crawl(sub.normalized_input)
        duration = 2500 + 550 * findings.pages + r.randint(0, 1500)
        scan.finished_at = ms(scan.started_at + timedelta(milliseconds=duration))
        scan.evidence_created_at = ms(scan.finished_at - timedelta(milliseconds=r.randint(90, 240)))
        scan.issues_created_at = ms(scan.finished_at - timedelta(milliseconds=r.randint(5, 30)))
        ev_at, iss_at = scan.evidence_created_at, scan.issues_created_at
        scan.evidence = [(self.new_child_id(ev_at), e) for e in findings.evidence]
        scan.issues = [(self.new_child_id(iss_at), i) for i in findings.issues]
        scan.score = findings.score
        scan.label = findings.label
        scan.summary = findings.summary
        scan.meta = findings.meta
        scan.progress = 100
        scan.updated_at = scan.finished_at
        return scan

    def scans(self, count: int) -> Iterator[GeneratedScan]:
        """``count`` scans over the last 90 days, oldest first."""
        timeline = self._timeline(count)
        for index, created_at in enumerate(timeline):
            stub = self.rng.random() < 0.01 and index < count - 5
            yield self.scan(created_at, self._status(index, count), stub=stub)

    # -- other tables --------------------------------------------------------
    def users(self, count: int) -> list[tuple[Any, ...]]:
        """User rows (USER_COLUMNS order); their ids are then used by some scans."""
        rows: list[tuple[Any, ...]] = []
        for n in range(count):
            created = ms(self.now - HISTORY + timedelta(seconds=self.rng.random() * 86400 * 30))
            user_id = self.new_scan_id(created)
            self.user_ids.append(user_id)
            pro = self.rng.random() < 0.1
            rows.append(
                (
                    user_id,
                    f"user{n + 1:05d}@example.com",
                    None if self.rng.random() < 0.5 else f"Demo User {n + 1}",
                    "$2b$12$" + "".join(self.rng.choices(_NANOID_ALPHABET[:62], k=53)),
                    self.rng.random() < 0.8,
                    "EMAIL",
                    "PRO" if pro else "FREE",
                    "ACTIVE" if pro else "INACTIVE",
                    self.rng.randrange(0, 50),
                    created,
                    created,
                )
            )
        return rows

    def cached_lists(self) -> list[tuple[Any, ...]]:
        """The three seeded lists (easyprivacy, whotracks, psl)."""
        trackers = sorted({root for _h, root, is_tracker, _fp in _THIRD_PARTY_HOSTS if is_tracker})
        fetched = ms(self.now - timedelta(days=3))
        lists: Sequence[tuple[str, str, object]] = (
            ("easyprivacy", "demo-1", {"domains": trackers[:8]}),
            (
                "whotracks",
                "demo-1",
                {"domains": trackers[8:14], "categories": {"analytics": trackers[8:11]}},
            ),
            ("psl", "public-1", {"suffixes": _PSL_SAMPLE, "wildcards": ["*.ck", "*.bd"]}),
        )
        return [
            (self.new_scan_id(fetched), source, version, fetched, to_json(data))
            for source, version, data in lists
        ]


def evidence_count_quantiles(scans: Sequence[GeneratedScan]) -> dict[str, float]:
    """Mean/p50/p99/max Evidence rows per done URL scan (for tests and reports)."""
    counts = sorted(len(s.evidence) for s in scans if s.status == "done" and s.target_type == "url")
    if not counts:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "mean": sum(counts) / len(counts),
        "p50": float(counts[len(counts) // 2]),
        "p99": float(counts[min(len(counts) - 1, int(len(counts) * 0.99))]),
        "max": float(counts[-1]),
    }
