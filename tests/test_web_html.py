"""The plugins' HTML in the app's pages (web.head_html, footer_html, widgets_html): a trusted
in-process plugin's markup as it is, a sandboxed one's never as markup, through the real host."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins.events import Context
from services_ai_plugins.web import footer_html, head_html, widgets_html

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")

HEADER = (
    "from services_ai_plugins import hookimpl\n"
    "from services_ai_plugins.events import Widget\n\n\n"
    "class Plugin:\n"
)

PAGE_PARTS = """
@hookimpl
def inject_head(self, context):
    return '<script>steal("head")</script>'

@hookimpl
def inject_footer(self, context):
    return '<script>steal("footer")</script>'

@hookimpl
def dashboard_widget(self, context):
    return Widget(tenant=context.tenant, title="<b>Hi</b>", html='<p onclick="x()">"hi"</p>',
                  order=ORDER)
"""

ACME = Context(tenant="acme")


@pytest.fixture
def host(hosts: Hosts, tmp_path: Path) -> PluginHost:
    made = cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=30.0, trusted=["trusted"])))
    install = Installer(tmp_path, HEADER)
    permissions = ["inject_html", "dashboard_widgets"]
    install(made, "trusted", PAGE_PARTS.replace("ORDER", "2"), permissions=permissions)
    install(made, "uploaded", PAGE_PARTS.replace("ORDER", "1"), permissions=permissions)
    assert made.runs_in_process("trusted")
    assert not made.runs_in_process("uploaded")
    return made


def test_a_sandboxed_plugins_html_never_reaches_the_page_as_markup(host: PluginHost) -> None:
    assert head_html(host, ACME) == '<script>steal("head")</script>'  # the trusted one only
    assert footer_html(host, ACME) == (
        '<script>steal("footer")</script>&lt;script&gt;steal(&quot;footer&quot;)&lt;/script&gt;'
    )
    widgets = widgets_html(host, ACME).split("\n")
    assert widgets == [
        '<section class="plugin-widget plugin-widget-medium" data-plugin="uploaded">'
        "<h2>&lt;b&gt;Hi&lt;/b&gt;</h2>"
        '<iframe sandbox="" class="plugin-widget-frame" title="&lt;b&gt;Hi&lt;/b&gt;" '
        'srcdoc="&lt;p onclick=&quot;x()&quot;&gt;&quot;hi&quot;&lt;/p&gt;"></iframe></section>',
        '<section class="plugin-widget plugin-widget-medium" data-plugin="trusted">'
        '<h2>&lt;b&gt;Hi&lt;/b&gt;</h2><p onclick="x()">"hi"</p></section>',
    ]


def test_trusting_sandboxed_html_inserts_it_as_it_is(host: PluginHost) -> None:
    trusting: dict[str, Any] = {"trust_sandboxed": True}
    assert head_html(host, ACME, **trusting) == '<script>steal("head")</script>' * 2
    assert "&lt;script" not in footer_html(host, ACME, **trusting)
    assert "<iframe" not in widgets_html(host, ACME, **trusting)


def test_a_tenant_without_the_plugins_gets_nothing(host: PluginHost) -> None:
    other = Context(tenant="globex")
    assert (head_html(host, other), footer_html(host, other), widgets_html(host, other)) == (
        "",
        "",
        "",
    )
