#!/usr/bin/env python3
"""Writes pii_cases.jsonl: labelled lines for measuring PII detection.

Each line is {"text": str, "spans": [{"type": T, "start": s, "end": e}], "kind": K} with
UTF-8 byte offsets. Labels come from how each value was generated (the generator knows
where it put every e-mail, card number, ...), never from the detector under test. Values are
made valid by construction (Luhn digits, IBAN mod-97 check digits, SSA-valid SSNs), and the
hard negatives are made to look like PII while not being it (Luhn failures, bad IBAN
checksums, versions, dates, ISBNs, UUIDs, git SHAs, MAC addresses ...).

    python3 make_pii_cases.py > pii_cases.jsonl
"""
import json
import random
import string

R = random.Random(20261124)


def digits(n):
    return "".join(R.choice(string.digits) for _ in range(n))


def alnum(n, alphabet=string.ascii_letters + string.digits):
    return "".join(R.choice(alphabet) for _ in range(n))


# ---------------------------------------------------------------- positives
FIRST = ["john", "maria", "wei", "fatima", "olga", "raj", "lena", "tom", "ana", "kofi", "yuki", "sam"]
LAST = ["doe", "garcia", "zhang", "khan", "ivanova", "patel", "schmidt", "lee", "silva", "mensah"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "uni-example.edu", "example.io",
           "post.example.de", "example.net", "sub.domain.example.fr"]


def email():
    f, l = R.choice(FIRST), R.choice(LAST)
    local = R.choice([f"{f}.{l}", f"{f}_{l}", f"{f}{R.randint(1, 99)}", f"{f}.{l}+news",
                      f"{f[0]}{l}", f"{f}-{l}", f"{l}.{f}.{R.randint(1970, 2005)}"])
    if R.random() < 0.2:
        local = local.capitalize()
    return f"{local}@{R.choice(DOMAINS)}"


def phone():
    a = str(R.randint(2, 9)) + digits(2)
    e = str(R.randint(2, 9)) + digits(2)
    n = digits(4)
    forms = [
        f"+1 {a} {e} {n}", f"+1-{a}-{e}-{n}", f"+1 ({a}) {e}-{n}", f"({a}) {e}-{n}",
        f"{a}-{e}-{n}", f"{a}.{e}.{n}", f"1-{a}-{e}-{n}",
        f"+44 20 {digits(4)} {digits(4)}", f"+44 (0)20 {digits(4)} {digits(4)}",
        f"+44 7{digits(3)} {digits(6)}", f"+49 30 {digits(7)}", f"+49 171 {digits(7)}",
        f"+33 1 {digits(2)} {digits(2)} {digits(2)} {digits(2)}",
        f"+33 6 {digits(2)} {digits(2)} {digits(2)} {digits(2)}", f"+81 3-{digits(4)}-{digits(4)}",
        f"+91 9{digits(4)} {digits(5)}", f"+61 2 {digits(4)} {digits(4)}",
        f"+55 11 9{digits(4)}-{digits(4)}", f"0044 20 {digits(4)} {digits(4)}",
        f"+49151{digits(8)}", f"+86 138 {digits(4)} {digits(4)}", f"+34 6{digits(2)} {digits(3)} {digits(3)}",
        f"+39 06 {digits(4)} {digits(4)}", f"+7 495 {digits(3)}-{digits(2)}-{digits(2)}",
        f"+1.{a}.{e}.{n}", f"+353 1 {digits(3)} {digits(4)}", f"+27 21 {digits(3)} {digits(4)}",
    ]
    return R.choice(forms)


def ssn():
    while True:
        a = R.randint(1, 899)
        if a != 666:
            break
    return f"{a:03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"


def luhn_complete(body):
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these get doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


CARD_PREFIXES = [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
                 ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3530", 16), ("36", 14),
                 ("62", 16), ("4", 19)]


def card_number():
    p, n = R.choice(CARD_PREFIXES)
    return luhn_complete(p + digits(n - len(p) - 1))


def card():
    d = card_number()
    style = R.random()
    if len(d) == 16 and style < 0.4:
        return " ".join(d[i:i + 4] for i in range(0, 16, 4))
    if len(d) == 16 and style < 0.7:
        return "-".join(d[i:i + 4] for i in range(0, 16, 4))
    if len(d) == 15 and style < 0.6:
        return f"{d[:4]} {d[4:10]} {d[10:]}"
    return d


def ipv4():
    return R.choice([
        f"192.168.{R.randint(0, 255)}.{R.randint(1, 254)}", f"10.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}",
        f"172.{R.randint(16, 31)}.{R.randint(0, 255)}.{R.randint(1, 254)}",
        ".".join(str(R.randint(1, 255)) for _ in range(4)), f"8.8.{R.choice([4, 8])}.{R.choice([4, 8])}",
        f"203.0.113.{R.randint(1, 254)}"])


def h4():
    return "%x" % R.randint(1, 0xFFFF)


def ipv6():
    g = [h4() for _ in range(8)]
    return R.choice([
        ":".join(g), ":".join("%04x" % int(x, 16) for x in g), f"2001:db8::{g[0]}:{g[1]}",
        f"fe80::{g[0]}:{g[1]}:{g[2]}:{g[3]}", f"2001:db8:{g[0]}::{g[1]}", f"::ffff:192.0.2.{R.randint(1, 254)}",
        ":".join(g[:3]) + "::" + g[7], ":".join(x.upper() for x in g)])


IBAN_BBAN = {
    "DE": lambda: digits(18), "GB": lambda: alnum(4, string.ascii_uppercase) + digits(14),
    "FR": lambda: digits(23), "NL": lambda: alnum(4, string.ascii_uppercase) + digits(10),
    "ES": lambda: digits(20), "IT": lambda: R.choice(string.ascii_uppercase) + digits(22),
    "CH": lambda: digits(17), "BE": lambda: digits(12), "AT": lambda: digits(16),
    "PL": lambda: digits(24), "NO": lambda: digits(11), "SE": lambda: digits(20),
}


def iban_check(cc, bban):
    s = bban + cc + "00"
    num = "".join(str(int(ch, 36)) for ch in s)
    return "%02d" % (98 - int(num) % 97)


def iban(valid=True):
    cc = R.choice(list(IBAN_BBAN))
    bban = IBAN_BBAN[cc]()
    check = iban_check(cc, bban)
    if not valid:
        check = "%02d" % ((int(check) + R.randint(1, 96)) % 97 or 1)
        if check == iban_check(cc, bban):
            check = "%02d" % ((int(check) + 1) % 100)
    s = cc + check + bban
    if R.random() < 0.6:
        s = " ".join(s[i:i + 4] for i in range(0, len(s), 4))
    return s


B62 = string.ascii_letters + string.digits


def api_key():
    return R.choice([
        lambda: "sk-" + alnum(48), lambda: "sk-proj-" + alnum(56, B62 + "_-"),
        lambda: "ghp_" + alnum(36), lambda: "github_pat_" + alnum(22) + "_" + alnum(59),
        lambda: f"xoxb-{digits(12)}-{digits(13)}-" + alnum(24), lambda: "AKIA" + alnum(16, string.ascii_uppercase + string.digits),
        lambda: "AIza" + alnum(35, B62 + "_-"), lambda: "sk_live_" + alnum(24), lambda: "pk_test_" + alnum(24),
        lambda: "glpat-" + alnum(20, B62 + "_-"), lambda: "hf_" + alnum(34, string.ascii_letters),
        lambda: "npm_" + alnum(36),
        lambda: "eyJ" + alnum(30, B62) + ".eyJ" + alnum(40, B62) + "." + alnum(43, B62 + "_-"),
        lambda: alnum(40),  # a bare high-entropy token
    ])()


GEN = {"EMAIL": email, "PHONE": phone, "SSN": ssn, "CREDIT_CARD": card, "IPV4": ipv4,
       "IPV6": ipv6, "IBAN": iban, "API_KEY": api_key}

TEMPLATES = [
    "Please contact me at {EMAIL} if anything changes.",
    "My number is {PHONE}, call after 6pm.",
    "Customer SSN: {SSN} (verified).",
    "Card on file: {CREDIT_CARD}, exp 09/27.",
    "Login from {IPV4} blocked by the firewall.",
    "Connection from [{IPV6}]:443 refused",
    "Transfer to IBAN {IBAN} please, ref 2024-118.",
    "export OPENAI_API_KEY={API_KEY}",
    "Hi, I'm Lena. Reach me on {PHONE} or {EMAIL}.",
    "Meine Telefonnummer ist {PHONE}, E-Mail: {EMAIL}.",
    "Mon IBAN est {IBAN} et mon numéro {PHONE}.",
    "電話番号は{PHONE}です。メール: {EMAIL}",
    "User {EMAIL} paid with {CREDIT_CARD} from {IPV4}.",
    "token: {API_KEY}",
    "Authorization: Bearer {API_KEY}",
    "ssn={SSN}; card={CREDIT_CARD}",
    "The server listens on {IPV6} and {IPV4}.",
    "Send the refund to {IBAN}; questions to {EMAIL}",
    "Leaked key {API_KEY} was rotated yesterday.",
    "Fax: {PHONE}",
    "Her social security number is {SSN} and she lives in Ohio.",
    "{EMAIL}",
    "Ping {IPV4} then {IPV4} again.",
    "Pay {CREDIT_CARD}",
    "Kontoverbindung: {IBAN}",
    "Call {PHONE} — ask for Kofi.",
    "“{EMAIL}” bounced twice.",
    "Sensitive: {SSN}, {PHONE}, {EMAIL}",
    "ip6 = {IPV6}",
    "gh auth login --with-token {API_KEY}",
]

NEG_PARTS = [
    lambda: f"version {R.randint(1, 12)}.{R.randint(0, 30)}.{R.randint(0, 99)}",
    lambda: f"v{R.randint(1, 9)}.{R.randint(0, 9)}.{R.randint(0, 9)}.{R.randint(0, 99)}",
    lambda: f"release {R.randint(10, 11)}.0.{R.randint(19000, 22999)}.{R.randint(1, 999)}",
    lambda: f"lodash@{R.randint(1, 4)}.{R.randint(0, 20)}.{R.randint(0, 30)}",
    lambda: f"{R.randint(1990, 2030)}-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}",
    lambda: f"{R.randint(1, 28):02d}.{R.randint(1, 12):02d}.{R.randint(1990, 2030)}",
    lambda: f"{R.randint(1, 12):02d}/{R.randint(1, 28):02d}/{R.randint(1990, 2030)}",
    lambda: f"{R.randint(2000, 2030)}-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}T{R.randint(0, 23):02d}:{R.randint(0, 59):02d}:{R.randint(0, 59):02d}Z",
    lambda: f"{R.randint(0, 23):02d}:{R.randint(0, 59):02d}:{R.randint(0, 59):02d}",
    lambda: "ISBN 978-0-306-40615-7", lambda: "ISBN 0-306-40615-2", lambda: "ISBN 9780306406157",
    lambda: f"ISBN 978-{R.randint(1, 9)}-{digits(3)}-{digits(5)}-{R.randint(0, 9)}",
    lambda: f"Order #{digits(9)}", lambda: f"ORD-{R.randint(2019, 2026)}-{digits(6)}",
    lambda: f"invoice INV-{digits(5)}-A", lambda: f"tracking 1Z{alnum(6, string.ascii_uppercase + string.digits)}{digits(10)}",
    lambda: f"ticket JIRA-{digits(4)}",
    lambda: bad_card(), lambda: bad_card(), lambda: bad_card(),
    lambda: iban(valid=False), lambda: iban(valid=False),
    lambda: uuid(), lambda: uuid().upper(), lambda: "%040x" % R.getrandbits(160),
    lambda: "commit %07x" % R.getrandbits(28),
    lambda: ":".join("%02X" % R.randint(0, 255) for _ in range(6)),
    lambda: "#%06X" % R.getrandbits(24), lambda: f"${R.randint(1, 99)},{digits(3)}.{digits(2)}",
    lambda: f"{R.randint(1, 9)},{digits(3)},{digits(3)}", lambda: "40.7128, -74.0060",
    lambda: f"localhost:{R.randint(1024, 65535)}", lambda: "std::vector<int>::iterator",
    lambda: f"{R.choice(['000', '666', '912', '987'])}-{R.randint(10, 99)}-{digits(4)}",
    lambda: f"{digits(3)}-{R.choice(['00'])}-{digits(4)}",
    lambda: "sk-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", lambda: "api_key=YOUR_API_KEY_HERE",
    lambda: "AbstractSingletonProxyFactoryBean", lambda: "getUserAccountSettingsForTwoFactorAuthHandler",
    lambda: "https://example.com/docs/v2/index.html", lambda: f"{R.randint(1, 9)}.{digits(5)}",
    lambda: f"room {R.randint(100, 1999)}, floor {R.randint(1, 40)}", lambda: f"zip {digits(5)}",
    lambda: f"{R.randint(1950, 1999)}-{R.randint(2000, 2025)}", lambda: "sha256:" + "%064x" % R.getrandbits(256),
    lambda: f"{digits(4)} {digits(4)} {digits(4)}", lambda: f"{digits(20)}",
    lambda: f"part no. {digits(3)}-{digits(3)}-{digits(3)}",
    lambda: "password: hunter2", lambda: f"build {digits(8)}.{digits(4)}",
    lambda: f"SKU {alnum(3, string.ascii_uppercase)}-{digits(5)}",
]


def bad_card():
    d = card_number()
    bad = d[:-1] + str((int(d[-1]) + R.randint(1, 9)) % 10)
    if len(bad) == 16 and R.random() < 0.5:
        return " ".join(bad[i:i + 4] for i in range(0, 16, 4))
    return bad


def uuid():
    h = "%032x" % R.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


NEG_TEMPLATES = [
    "Upgraded to {N} yesterday; see {N}.",
    "Build {N} finished at {N}.",
    "Reference: {N}",
    "The value {N} is not sensitive, neither is {N}.",
    "Log line: id={N} ts={N}",
    "Ihre Bestellung {N} wurde am {N} versandt.",
    "{N}",
    "Ticket {N} mentions {N} and {N}.",
]


def fill(template, gen_for):
    out = b""
    spans = []
    rest = template
    while "{" in rest:
        pre, _, tail = rest.partition("{")
        name, _, rest = tail.partition("}")
        out += pre.encode()
        value, typ = gen_for(name)
        start = len(out)
        out += value.encode()
        if typ:
            spans.append({"type": typ, "start": start, "end": len(out)})
    out += rest.encode()
    return out.decode(), spans



# Written by hand: natural contexts the templates above do not produce. Each entry is the
# text and the (type, exact substring) pairs it contains, in order of appearance.
HANDWRITTEN = [
    ("From: Jane Roe <jane.roe@example.com>", [("EMAIL", "jane.roe@example.com")]),
    ("mailto:support@help.example.org?subject=refund", [("EMAIL", "support@help.example.org")]),
    ("WRITE TO JOHN.DOE@EXAMPLE.COM.", [("EMAIL", "JOHN.DOE@EXAMPLE.COM")]),
    ("cc: a.b@example.com, c_d@example.net; bcc x@example.io", [("EMAIL", "a.b@example.com"), ("EMAIL", "c_d@example.net"), ("EMAIL", "x@example.io")]),
    ('{"email": "kofi.mensah@example.com", "age": 41}', [("EMAIL", "kofi.mensah@example.com")]),
    ("Call +1 800 555 0199 ext. 23 for billing.", [("PHONE", "+1 800 555 0199")]),
    ("tel:+14155550132", [("PHONE", "+14155550132")]),
    ("UK mobile +44 7700 900123, landline +44 (0)161 496 0000", [("PHONE", "+44 7700 900123"), ("PHONE", "+44 (0)161 496 0000")]),
    ("Reach the desk at (212)555-0147 or 212 555 0148.", [("PHONE", "(212)555-0147"), ("PHONE", "212 555 0148")]),
    ("Numéro : +33 (0)1 42 68 53 00", [("PHONE", "+33 (0)1 42 68 53 00")]),
    ("WhatsApp: +971 50 123 4567", [("PHONE", "+971 50 123 4567")]),
    ("Phone/fax 0049 89 12345678", [("PHONE", "0049 89 12345678")]),
    ("SSN 078-05-1120 appeared on a sample card in 1938.", [("SSN", "078-05-1120")]),
    ("Applicant: DOB 1980-04-12, SSN: 219-09-9999.", [("SSN", "219-09-9999")]),
    ("Visa 4012888888881881 and Mastercard 5555555555554444 are test numbers.", [("CREDIT_CARD", "4012888888881881"), ("CREDIT_CARD", "5555555555554444")]),
    ("Amex 3782 822463 10005 was declined.", [("CREDIT_CARD", "3782 822463 10005")]),
    ("card: 6011-1111-1111-1117.", [("CREDIT_CARD", "6011-1111-1111-1117")]),
    ("JCB 3530111333300000 expires 11/26", [("CREDIT_CARD", "3530111333300000")]),
    ("Gateway 10.0.0.1/24 routes to 192.168.1.1:8080", [("IPV4", "10.0.0.1"), ("IPV4", "192.168.1.1")]),
    ("GET http://203.0.113.9/index.html 200", [("IPV4", "203.0.113.9")]),
    ("ssh root@198.51.100.23 -p 2222", [("IPV4", "198.51.100.23")]),
    ("curl http://[2001:db8::1]/health", [("IPV6", "2001:db8::1")]),
    ("link-local fe80::1ff:fe23:4567:890a%eth0 is up", [("IPV6", "fe80::1ff:fe23:4567:890a")]),
    ("mapped ::ffff:198.51.100.7 seen twice", [("IPV6", "::ffff:198.51.100.7")]),
    ("IBAN: GB82 WEST 1234 5698 7654 32 (Westminster)", [("IBAN", "GB82 WEST 1234 5698 7654 32")]),
    ("Bitte an DE89370400440532013000 überweisen.", [("IBAN", "DE89370400440532013000")]),
    ("NO9386011117947 is a Norwegian account", [("IBAN", "NO9386011117947")]),
    ('{"api_key": "Zx81KqP0wLm3Vb7RtY2nHs5D", "region": "eu"}', [("API_KEY", "Zx81KqP0wLm3Vb7RtY2nHs5D")]),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", [("API_KEY", "AKIAIOSFODNN7EXAMPLE")]),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", [("API_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")]),
    ("SLACK_TOKEN=xoxp-123456789012-123456789012-abcdef0123456789abcdef0123456789", [("API_KEY", "xoxp-123456789012-123456789012-abcdef0123456789abcdef0123456789")]),
    ("password = Tr0ub4dor&3x", []),  # too short after '&': the value stops at '&' (9 chars)
    ("DB_PASSWORD='n8Fq2LpX7vRz4KsW'", [("API_KEY", "n8Fq2LpX7vRz4KsW")]),
    # Hard negatives written by hand.
    ("Meet at 5 pm in room 101; bring 3 copies.", []),
    ("The service runs on port 8080 and 443.", []),
    ("IPv6 abbreviates zeros with :: as in the RFC.", []),
    ("Subnet 192.168.1 is incomplete, 1.2.3.4.5 is an OID-like string.", []),
    ("See table 3-7 on pages 123-456.", []),
    ("phone: TBD, email: n/a", []),
    ("ZIP+4 code 94105-1804", []),
    ("Timer 12:30:45.250 elapsed; MAC 3c:22:fb:9a:01:7e", []),
    ("dead:beef:cafe is not an address", []),
    ("Call me at extension 4521.", []),
    ("Tel. 1-2-3-4, go!", []),
    ("uuid 123e4567-e89b-12d3-a456-426614174000", []),
    ("The model scored 78.5 on MMLU and 1234.5678 on another scale.", []),
    ("Coordinates 48.8584° N, 2.2945° E", []),
    ("Use sk-your-key-here as a placeholder.", []),
    ("Set API_KEY=changeme before running.", []),
    ("The answer to 4111 1111 1111 1112 is no: that number fails Luhn.", []),
    ("Hash b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9", []),
    ("Image tag ghcr.io/example/app:2024.03.15-1", []),
    ("Order 2024-0001-7781-3321 shipped", []),
    ("Lot number 123456789012345 (15 digits, no issuer)", []),
    ("IBAN format is CCkk BBBB ...; e.g. XX00 0000 0000 00", []),
    ("Version 2001:1 of the spec", []),
    ("ratio 16:9:4 and 4:3", []),
    ("Base64 of hello is aGVsbG8=", []),
]


def locate(text, pairs):
    spans, pos = [], 0
    b = text.encode()
    for typ, sub in pairs:
        i = b.index(sub.encode(), pos)
        spans.append({"type": typ, "start": i, "end": i + len(sub.encode())})
        pos = i + len(sub.encode())
    return spans


def main():
    lines = []
    # Positives: every template several times, so each type has many independent values.
    for rep in range(5):
        for t in TEMPLATES:
            text, spans = fill(t, lambda n: (GEN[n](), n))
            lines.append({"text": text, "spans": spans, "kind": "positive"})
    # Hard negatives, alone and mixed with one real value.
    for rep in range(14):
        for t in NEG_TEMPLATES:
            text, spans = fill(t, lambda n: (R.choice(NEG_PARTS)(), None))
            lines.append({"text": text, "spans": spans, "kind": "negative"})
    for rep in range(40):
        typ = R.choice(list(GEN))
        t = R.choice(["{N} and then {P}, {N}.", "{P} ({N})", "Seen {N}; contact {P}; {N}"])
        text, spans = fill(t, lambda n: (GEN[typ](), typ) if n == "P" else (R.choice(NEG_PARTS)(), None))
        lines.append({"text": text, "spans": spans, "kind": "mixed"})
    for text, pairs in HANDWRITTEN:
        lines.append({"text": text, "spans": locate(text, pairs), "kind": "handwritten"})
    for obj in lines:
        print(json.dumps(obj, ensure_ascii=False))


if __name__ == "__main__":
    main()
