"""The Debian packages the corpus is built from, what is taken from each, and their licences.

Every package is in Debian 12 (bookworm) main, so its content meets the Debian Free Software
Guidelines. ``licence`` is our one-line summary of the package's debian/copyright for the text we
use; SOURCES.md also lists the licence names found in the machine-readable copyright file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAN_PACKAGES_GLOB = ["usr/share/man/man[1-8]/*"]


@dataclass
class Source:
    package: str
    licence: str
    html: list[str] = field(default_factory=list)  # globs relative to the extracted package root
    html_exclude: list[str] = field(default_factory=list)  # substrings of paths to skip
    html_main: str | None = None  # CSS selector of the main content
    html_api: bool = False  # extract Python API entries
    man: bool = False
    info: dict[str, list[str]] = field(default_factory=dict)  # manual name -> globs (in order)
    pod: list[str] = field(default_factory=list)
    pod_exclude: list[str] = field(default_factory=list)
    dictd: str | None = None  # dictionary name: <name>.index / <name>.dict.dz
    wordnet: bool = False


GNU_MAN = "GPL-3+ (programs and manual pages); manual GFDL-1.3+, no invariant sections"

SOURCES: list[Source] = [
    Source("python3.11-doc", "PSF-2.0 (Python documentation licence)",
           html=[f"usr/share/doc/python3.11/html/{d}/*.html" for d in
                 ("library", "tutorial", "howto", "reference", "faq", "using", "extending", "c-api",
                  "installing", "distributing")] + ["usr/share/doc/python3.11/html/glossary.html"],
           html_exclude=["genindex", "search.html", "py-modindex"], html_main="div.body", html_api=True),
    Source("postgresql-doc-15", "PostgreSQL licence (BSD-style)",
           html=["usr/share/doc/postgresql-doc-15/html/*.html"],
           html_exclude=["/release-", "bookindex", "/index.html", "/legalnotice", "/biblio"]),
    Source("sqlite3-doc", "public domain",
           html=["usr/share/doc/sqlite3/*.html", "usr/share/doc/sqlite3/c3ref/*.html",
                 "usr/share/doc/sqlite3/session/*.html"],
           html_exclude=["changes.html", "chronology.html", "sitemap", "docs.html", "keyword_index",
                         "toc.html", "crossref", "/c3ref/funclist", "/c3ref/objlist", "/c3ref/constlist",
                         "/index.html"]),
    Source("git-doc", "GPL-2",
           html=["usr/share/doc/git-doc/user-manual.html", "usr/share/doc/git-doc/technical/*.html",
                 "usr/share/doc/git-doc/howto/*.html"]),
    Source("git-man", "GPL-2", man=True),
    Source("perl-doc", "GPL-1+ or Artistic",
           pod=["usr/share/perl/*/pod/*.pod"],
           pod_exclude=["delta", "perlhist", "perltoc", "perlartistic", "perlgpl", "perlfaq1", "perlaix",
                        "perlamiga", "perlandroid", "perlbs2000", "perlcygwin", "perlhaiku", "perlhpux",
                        "perlhurd", "perlirix", "perllinux", "perlmacos", "perlopenbsd", "perlos2",
                        "perlos390", "perlos400", "perlplan9", "perlqnx", "perlriscos", "perlsolaris",
                        "perlsynology", "perltru64", "perlvms", "perlvos", "perlwin32", "perlexperiment"]),
    Source("debian-reference-en", "GPL-2+", html=["usr/share/debian-reference/*.en.html"]),
    Source("debian-handbook", "GPL-2+ or CC-BY-SA-3.0",
           html=["usr/share/doc/debian-handbook/html/en-US/*.html"], html_exclude=["ix01", "/index.html"]),
    Source("debian-policy", "GPL-2+",
           html=["usr/share/doc/debian-policy/policy.html/*.html",
                 "usr/share/doc/debian-policy/*.html", "usr/share/doc/debian-policy/*/*.html"],
           html_exclude=["genindex", "search.html", "/index.html", "/upgrading-checklist"]),
    Source("developers-reference", "GPL-2", html=["usr/share/developers-reference/*.html"],
           html_exclude=["genindex", "search.html", "/index.html"]),
    Source("maint-guide", "GPL-2+ or MIT", html=["usr/share/doc/maint-guide/html/*.en.html"],
           html_exclude=["index.en.html"]),
    Source("gnu-standards", "GFDL-1.3+, no invariant sections", html=["usr/share/doc/gnu-standards/*.html"]),
    Source("bash-doc", "GFDL-1.3+, no invariant sections (Bash Reference Manual)",
           html=["usr/share/doc/bash/bashref.html"]),
    Source("flex-doc", "FLEX licence (BSD-style)", html=["usr/share/doc/flex-doc/html/*.html"],
           html_exclude=["Concept-Index", "Index-of-", "/index.html"]),
    Source("diffutils-doc", "GFDL-1.3+, no invariant sections", html=["usr/share/doc/diffutils/*.html"],
           html_exclude=["Index.html", "/index.html"]),
    Source("autoconf-doc", "GFDL-1.3+, no invariant sections",
           info={"Autoconf": ["usr/share/info/autoconf.info*"]}),
    Source("binutils-doc", "GFDL-1.3+, no invariant sections",
           info={"GNU ld": ["usr/share/info/ld.info*"], "GNU as": ["usr/share/info/as.info*"],
                 "GNU Binutils": ["usr/share/info/binutils.info*"], "gprof": ["usr/share/info/gprof.info*"]}),
    Source("coreutils", GNU_MAN, man=True, info={"GNU Coreutils": ["usr/share/info/coreutils.info*"]}),
    Source("findutils", GNU_MAN, man=True, info={"GNU Findutils": ["usr/share/info/find.info*"]}),
    Source("grep", GNU_MAN, man=True, info={"GNU grep": ["usr/share/info/grep.info*"]}),
    Source("sed", GNU_MAN, man=True, info={"GNU sed": ["usr/share/info/sed.info*"]}),
    Source("gzip", GNU_MAN, man=True, info={"GNU gzip": ["usr/share/info/gzip.info*"]}),
    Source("wget", "GPL-3+; manual and manual page GFDL", man=True, info={"GNU Wget": ["usr/share/info/wget.info*"]}),
    Source("tar", "GPL-3+", man=True),
    Source("make", "GPL-3+", man=True),
    Source("gawk", "GPL-3+", man=True),
    Source("less", "GPL-3+ or Less licence", man=True),
    Source("rsync", "GPL-3+", man=True),
    Source("openssh-client", "OpenSSH licence (BSD-style)", man=True),
    Source("curl", "curl licence (MIT-style)", man=True),
    Source("util-linux", "GPL-2+ (and other free licences per file)", man=True),
    Source("procps", "GPL-2+ / LGPL-2+", man=True),
    Source("iproute2", "GPL-2", man=True),
    Source("mandoc", "ISC / BSD-2-clause", man=True),
    Source("manpages", "Linux man-pages: mixed free licences (Verbatim, GPL-2+, BSD)", man=True),
    Source("manpages-dev", "Linux man-pages: mixed free licences (Verbatim, GPL-2+, BSD)", man=True),
    Source("glibc-doc", "LGPL-2.1+ / GPL-2+", man=True),
    Source("dict-gcide", "GPL-2+ (GCIDE, from Webster 1913 and WordNet)", dictd="gcide"),
    Source("dict-foldoc", "GFDL-1.1+, no invariant sections", dictd="foldoc"),
    Source("dict-jargon", "public domain (Jargon File); packaging GPL-2+", dictd="jargon"),
    Source("dict-vera", "GFDL-1.1+, no invariant sections", dictd="vera"),
    Source("dict-devil", "public domain (Bierce, 1911)", dictd="devil"),
    Source("wordnet-base", "WordNet 3.0 licence (permissive, BSD-style)", wordnet=True),
]

# Tools used while building (downloaded, not installed): mandoc renders the manual pages.
TOOL_PACKAGES = ["mandoc"]


def all_packages() -> list[str]:
    names = [s.package for s in SOURCES]
    for t in TOOL_PACKAGES:
        if t not in names:
            names.append(t)
    return names
