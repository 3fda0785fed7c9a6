"""Realistic generated sample data in cocli's layout, for the demo and the benchmarks.

Deterministic for a given seed, and fast (plain writes, no YAML dumping per file) so that
benchmark trees of 300,000 companies can be built in reasonable time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_PREFIX = [
    "North", "Blue", "Bright", "Iron", "Silver", "Green", "Summit", "Harbor", "Pine", "Atlas",
    "Clear", "Golden", "Maple", "Union", "Coastal", "Prairie", "Granite", "Willow", "Red", "Oak",
]
_CORE = [
    "Ridge", "Valley", "Stone", "River", "Field", "Bridge", "Peak", "Lake", "Forge", "Line",
    "Point", "Crest", "Grove", "Works", "Light", "Path", "Gate", "Mill", "Wave", "Bay",
]
_KIND = [
    ("Roofing", "roofing"), ("Dental", "dentist"), ("Plumbing", "plumber"), ("Coffee", "cafe"),
    ("Landscaping", "landscaping"), ("Law", "legal"), ("Bakery", "bakery"), ("Auto", "auto"),
    ("Fitness", "gym"), ("Print", "printing"), ("Solar", "solar"), ("Vet", "veterinary"),
]
_CITIES = [
    ("Austin", "TX"), ("Denver", "CO"), ("Portland", "OR"), ("Madison", "WI"), ("Raleigh", "NC"),
    ("Boise", "ID"), ("Tucson", "AZ"), ("Omaha", "NE"), ("Albany", "NY"), ("Eugene", "OR"),
]
_SUFFIX = ["LLC", "Inc", "Co", "Group", "& Sons", "Partners"]
_TAGS = ["prospect", "customer", "cold", "warm", "hot", "do-not-call", "enriched", "local"]


@dataclass(frozen=True)
class Company:
    slug: str
    name: str
    domain: str
    phone: str
    city: str
    state: str
    category: str
    tags: tuple[str, ...]

    def index_md(self) -> str:
        # ~1 KB of front matter, the shape cocli writes.
        return (
            "---\n"
            f"name: {self.name}\n"
            f"domain: {self.domain}\n"
            f"website: https://www.{self.domain}/\n"
            f"phone_number: '{self.phone}'\n"
            f"email: info@{self.domain}\n"
            f"city: {self.city}\n"
            f"state: {self.state}\n"
            "country: US\n"
            f"category: {self.category}\n"
            "type: company\n"
            f"slug: {self.slug}\n"
            "created_at: '2026-11-01T09:30:00+00:00'\n"
            "updated_at: '2026-11-20T14:05:00+00:00'\n"
            "source: google-maps\n"
            "rating: 4.6\n"
            "reviews_count: 128\n"
            "employees: 12\n"
            "revenue_band: 1M-5M\n"
            f"address: {100 + len(self.slug) * 7} Main Street, {self.city}, {self.state}\n"
            "hours: Mon-Fri 8:00-17:00\n"
            "linkedin_url: null\n"
            "facebook_url: null\n"
            "instagram_url: null\n"
            "keywords:\n"
            f"- {self.category}\n"
            f"- {self.city.lower()}\n"
            "services:\n"
            "- consultation\n"
            "- installation\n"
            "- maintenance\n"
            "---\n"
            "\n"
            f"{self.name} is a {self.category} business in {self.city}, {self.state}.\n"
        )

    def tags_lst(self) -> str:
        return "".join(f"{t}\n" for t in self.tags)


def companies(n: int, seed: int = 7, start: int = 0) -> Iterator[Company]:
    rnd = random.Random(seed)
    for i in range(start, start + n):
        pre, core = rnd.choice(_PREFIX), rnd.choice(_CORE)
        kind, category = rnd.choice(_KIND)
        city, state = rnd.choice(_CITIES)
        name = f"{pre}{core} {kind} {rnd.choice(_SUFFIX)}"
        slug = f"{pre}{core}-{kind}-{i}".lower()
        domain = f"{pre}{core}{kind}{i}.com".lower()
        phone = f"+1-{rnd.randint(200, 989)}-{rnd.randint(200, 989)}-{rnd.randint(1000, 9999)}"
        tags = tuple(sorted(rnd.sample(_TAGS, rnd.randint(1, 3))))
        yield Company(slug, name, domain, phone, city, state, category, tags)


def write_company(root: Path, c: Company, notes: int = 0) -> Path:
    d = root / "companies" / c.slug
    d.mkdir(parents=True, exist_ok=True)
    (d / "_index.md").write_text(c.index_md(), encoding="utf-8")
    (d / "tags.lst").write_text(c.tags_lst(), encoding="utf-8")
    if notes:
        (d / "notes").mkdir(exist_ok=True)
        for k in range(notes):
            (d / "notes" / f"2026-11-{10 + k:02d}-call.md").write_text(
                f"# Call with {c.name}\n\nAsked about pricing; follow up next week.\n",
                encoding="utf-8",
            )
    return d


def write_tree(root: Path, n: int, seed: int = 7, notes_every: int = 0) -> list[Company]:
    """Create ``n`` companies under ``root`` (cocli layout) and return them."""
    (root / "companies").mkdir(parents=True, exist_ok=True)
    (root / "people").mkdir(exist_ok=True)
    (root / "wal").mkdir(exist_ok=True)
    out = []
    for i, c in enumerate(companies(n, seed)):
        write_company(root, c, notes=1 if notes_every and i % notes_every == 0 else 0)
        out.append(c)
    return out
