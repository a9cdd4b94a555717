"""pipeline.safety.pii: e-mail, IP and phone spans in realistic sentences, look-alikes left alone, redaction."""

import itertools

import pytest

from pipeline.safety.pii import PII_TYPES, Span, find_pii, redact


def found(text: str) -> list[tuple[str, str]]:
    return [(span.type, text[span.start:span.end]) for span in find_pii(text)]


def test_types_are_the_interface():
    assert PII_TYPES == ("EMAIL_ADDRESS", "IP_ADDRESS", "PHONE_NUMBER")


def test_email_exact_span():
    text = "For details write to jane.doe+news@mail.acme-corp.co.uk, or ask at the desk."
    start = text.index("jane")
    assert find_pii(text) == [Span("EMAIL_ADDRESS", start, start + len("jane.doe+news@mail.acme-corp.co.uk"))]


@pytest.mark.parametrize("text, expected", [
    ("Contact: info@givewell.org.", "info@givewell.org"),                        # sentence-final dot left out
    ("(jeff@thespacereview.com) is the editor", "jeff@thespacereview.com"),
    ("网站地图fyzw88@126.com 版权所有", "fyzw88@126.com"),                         # script without spaces before it
    ("連絡先はinfo@example.jpまで", "info@example.jp"),
    ("Jonathan Bragg jbragg [at] allenai.org About", "jbragg [at] allenai.org"),  # scraper-shy form
    ("mail me: p.shanley(at)thr.com", "p.shanley(at)thr.com"),
])
def test_email_forms(text, expected):
    assert found(text) == [("EMAIL_ADDRESS", expected)]


def test_retina_image_names_are_not_emails():
    assert find_pii("<img src=logo@2x.png> and icon@1.5x.jpg") == []


@pytest.mark.parametrize("text, expected", [
    ("Failed password for root from 84.17.52.1 port 22 ssh2", "84.17.52.1"),
    ('10.4.0.12 - - [12/Mar/2024:10:31:07 +0000] "GET / HTTP/1.1" 200', "10.4.0.12"),   # log line, private
    ("My router is at 192.168.1.1, type it in the browser.", "192.168.1.1"),
    ("Connect to 172.16.5.4:8080 first.", "172.16.5.4"),
    ("10.1.1.5 Accepted connection from the gateway", "10.1.1.5"),                     # not a heading number
    ("Your IP address is 2a00:1450:4001:81c::200e.", "2a00:1450:4001:81c::200e"),
    ("ping fe80::1ff:fe23:4567:890a%eth0 now", "fe80::1ff:fe23:4567:890a"),
    ("SRC=2001:4860:0000:0000:0000:0000:0000:8888 DST", "2001:4860:0000:0000:0000:0000:0000:8888"),
    ("mapped ::ffff:84.12.3.4 here", "::ffff:84.12.3.4"),                               # one span, not two
])
def test_ip_addresses(text, expected):
    assert found(text) == [("IP_ADDRESS", expected)]


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.0.1.1", "0.0.0.0", "::1", "::",                    # loopback, unspecified
    "192.0.2.15", "198.51.100.7", "203.0.113.42", "2001:db8::1",         # documentation ranges
    "2001:db8:85a3::8a2e:370:7334", "255.255.255.0", "255.255.255.255", "224.0.0.251",  # netmask, broadcast, mDNS
])
def test_loopback_documentation_and_protocol_addresses_are_kept(address):
    assert find_pii(f"Point the client at {address} for testing.") == []


def test_ips_in_a_code_sample_are_kept():
    code = "app.run(host='0.0.0.0', port=5000)\ncurl http://127.0.0.1:8000/health\nlisten [::1]:80;"
    assert find_pii(code) == []


@pytest.mark.parametrize("text", [
    "Update to version 1.2.3.4 to fix the crash.",
    "Released v10.0.0.1 today.",
    "User-Agent: Mozilla/5.0 Chrome/120.0.6099.109 Safari/537.36 and Chrome/100.2.3.4",
    "Firmware 2.1.0.12 is out.",
    "See section 1.2.3.4 below.",
    "1.2.3.4 Scope of application",
    "Installed 4.17.21.0-beta.",
    "OID 1.3.6.1.4.1.311 and 05.06.07.08",
    "MAC 00:1A:2B:3C:4D:5E, at 10:30:45, std::vector<int>::iterator",
])
def test_versions_and_other_dotted_numbers_are_not_ips(text):
    assert find_pii(text) == []


@pytest.mark.parametrize("text, expected", [
    ("Call us at (212) 736-5000 (Mon–Fri).", "(212) 736-5000"),                 # US national
    ("Questions? 1-800-275-2273 or +1 212-736-5000", None),                     # US toll-free, +1 (two)
    ("Contact: Jane Doe, Tel. 020 7946 0958", "020 7946 0958"),                 # UK national
    ("London office +44 (0)20 7946 0958 ext 2", "+44 (0)20 7946 0958"),         # UK international, (0)
    ("Kontakt: Telefon 030 12345678, Fax 030/1234567", None),                   # DE, two forms
    ("Erreichbar unter 0049 30 12345678.", "0049 30 12345678"),                 # 00 international prefix
    ("Téléphone : 01 23 45 67 89 — courriel", "01 23 45 67 89"),               # FR
    ("Portable 06.12.34.56.78 après 18h", "06.12.34.56.78"),                    # FR, dotted
    ("WhatsApp +91 98765 43210 or e-mail", "+91 98765 43210"),                  # IN international
    ("Call 98765 43210 for bookings", "98765 43210"),                           # IN mobile, national
    ("Head office: 022 2345 6789", "022 2345 6789"),                            # IN landline
    ("Oficina: +34 612 34 56 78", "+34 612 34 56 78"),                          # any +CC
    ("Tokyo desk +81 3-1234-5678.", "+81 3-1234-5678"),
    ("Phone number\n02079460958\nMessage", "02079460958"),                      # bare run under its label
    ("Maria Iyer (0788 740 3275)", None),
])
def test_phone_numbers(text, expected):
    spans = found(text)
    assert spans and all(kind == "PHONE_NUMBER" for kind, _ in spans)
    if expected is not None:
        assert spans == [("PHONE_NUMBER", expected)]


def test_phone_exact_spans_of_several_forms():
    text = "Kontakt: Telefon 030 12345678, Fax 030/1234567, mobil +49 171 1234567."
    assert found(text) == [("PHONE_NUMBER", "030 12345678"), ("PHONE_NUMBER", "030/1234567"),
                           ("PHONE_NUMBER", "+49 171 1234567")]


def test_parenthesised_number_span_excludes_the_closing_bracket_only_when_unbalanced():
    assert found("Maria Iyer (0788 740 3275)") == [("PHONE_NUMBER", "0788 740 3275")]
    assert found("By Megan Rowe meganr@spokesman.com(509) 459-5382 South") == [
        ("EMAIL_ADDRESS", "meganr@spokesman.com"), ("PHONE_NUMBER", "(509) 459-5382")]


@pytest.mark.parametrize("text", [
    "Updated 2024-01-15 10:31:07, valid 15.01.2024 – 20.01.2024 and 01/15/2024.",           # dates
    "Now only $1,299.99 (was € 1.234.567), USD 1 299 000, 12 345 678 € or Rs. 1,234,567.",  # prices
    "ISBN 978-3-16-148410-0, ISBN-10: 0-306-40615-2, 978-0-306-40615-7 and ISBN 0306406152.",  # ISBNs
    "Location: 40.7128, -74.0060 or 48.85661 2.35222 or 51.5074° N, 0.1278° W",             # coordinates
    "Order #1234567890, Order No. 304-1234567-1234567, Invoice INV-2024-001234.",            # order numbers
    "Customer ID 4155550132 and order number 02079460958 and Ref: 0207 9460 958",
    "Tracking number: 1Z999AA10123456784, SKU 12345678",
    "The population was 8,336,817 in 2020; pp. 1123-1145; years 1998–2004.",
    "doi:10.1007/978-3-319-09575-2 and https://example.com/item/4155550132",
    "Scores 5040 5 1 17 27 and 2339 1 1 11 18 in the table.",
    "Zoom: 5348583561 after the contact line",
])
def test_look_alikes_are_not_phone_numbers(text):
    assert find_pii(text) == []


def test_bare_digit_run_needs_a_phone_word():
    assert found("Tel: 02079460958") == [("PHONE_NUMBER", "02079460958")]
    assert find_pii("Reference 02079460958") == []
    assert find_pii("Maria Martin | Acme Ltd | 02079460958") == []


def test_redact_replaces_each_span_with_its_type():
    text = "Mail jane@acme.io or call +44 20 7946 0958 from 84.17.52.1, not 127.0.0.1."
    assert redact(text, find_pii(text)) == (
        "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER> from <IP_ADDRESS>, not 127.0.0.1.")


def test_redact_with_no_spans_and_at_the_edges():
    assert redact("nothing here", []) == "nothing here"
    text = "jane@acme.io"
    assert redact(text, find_pii(text)) == "<EMAIL_ADDRESS>"
    assert redact("ab", [Span("IP_ADDRESS", 1, 2), Span("EMAIL_ADDRESS", 0, 1)]) == "<EMAIL_ADDRESS><IP_ADDRESS>"


def test_spans_are_sorted_and_never_overlap():
    text = ("--\nJames Smith\nSales Manager, Acme Ltd\nT: +44 20 7946 0958\nM: 07700 900 123\njames@acme.co.uk\n"
            "Mar 12 10:31:07 gw kernel: SRC=::ffff:84.12.3.4 DST=10.0.0.5 LEN=60\n"
            "Posted by Priya (2a00:1450:4001:81c::200e) on 2024-01-15, 0049 30 12345678, j@x.de")
    spans = find_pii(text)
    assert len(spans) >= 6
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert all(span.type in PII_TYPES and 0 <= span.start < span.end <= len(text) for span in spans)
    kinds = {span.type for span in spans}
    assert kinds == set(PII_TYPES)


def test_empty_and_pii_free_text():
    assert find_pii("") == []
    assert redact("", []) == ""
    assert find_pii("A page about gardening, with no numbers or addresses at all.\n" * 200) == []
