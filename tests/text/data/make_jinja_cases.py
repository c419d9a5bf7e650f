#!/usr/bin/env python3
"""Writes jinja_cases.json: small templates, their context, and what jinja2 renders.

The environment is the one transformers builds for apply_chat_template
(transformers/utils/chat_template_utils.py): ImmutableSandboxedEnvironment with
trim_blocks=True, lstrip_blocks=True, the loopcontrols extension, `tojson` replaced by
json.dumps(ensure_ascii=False, ...) and a `raise_exception` global. A case whose rendering
raises is recorded with "error": the message forge must report.

Run with a Python that has jinja2 (3.1.x); the C++ test reads only the JSON output.
"""
import json
import sys

import jinja2
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

MSGS = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"}]

# (name, template, context)
CASES = [
    # output, literals, printing as Python str()
    ("text only", "plain text", {}),
    ("string escapes", r"{{ 'a\tb\\n\'q\' \"d\" \u00e9 \x41 \101' }}", {}),
    ("double quoted", '{{ "it\'s" }}', {}),
    ("adjacent strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("ints and floats", "{{ 1 }} {{ -2 }} {{ 1.5 }} {{ 2.0 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 0.1 + 0.2 }} {{ 1_000 }}", {}),
    ("booleans and none", "{{ true }} {{ False }} {{ none }} {{ None }}", {}),
    ("list repr", "{{ [1, 'a', none, true, 2.5, [\"it's\"]] }}", {}),
    ("dict repr", "{{ {'a': 1, 'b': [1, 2], 3: 'x'} }}", {}),
    ("context repr", "{{ messages[0] }}", {"messages": MSGS}),
    ("unicode passthrough", "{{ s }}|{{ s | length }}|{{ s[1] }}|{{ s[::-1] }}", {"s": "héllo→世界"}),
    # arithmetic
    ("arithmetic", "{{ 7 + 2 }} {{ 7 - 2 }} {{ 7 * 2 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }}", {}),
    ("negative floor division", "{{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ -7.5 // 2 }} {{ -7.5 % 2 }}", {}),
    ("mixed numbers", "{{ 1 + 2.5 }} {{ true + 1 }} {{ 10 / 4 }} {{ 2 ** -1 }} {{ 4 / 2 }}", {}),
    ("precedence", "{{ 2 + 3 * 4 }} {{ (2 + 3) * 4 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }}", {}),
    ("string concat and repeat", "{{ 'a' + 'b' }} {{ 'ab' * 3 }} {{ 1 ~ 'x' ~ none ~ true }} {{ [1] + [2, 3] }}", {}),
    ("tilde binds looser than mul", "{{ 'n=' ~ 2 * 3 }}", {}),
    # comparison and logic
    ("comparisons", "{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 1 != 2 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}", {}),
    ("logic", "{{ true and 'x' }} {{ 0 or 'y' }} {{ not 0 }} {{ not 'a' }} {{ none or [] or 'z' }}", {}),
    ("in operator", "{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'cat' }} {{ 3 not in [1] }}", {}),
    ("in on message", "{% for m in messages %}{{ 'content' in m }}{{ 'tool_calls' in m }} {% endfor %}", {"messages": MSGS[:2]}),
    ("ternary", "{{ 'yes' if x else 'no' }} {{ 'yes' if not x else 'no' }}|{{ 'only' if false }}|", {"x": 1}),
    ("nested ternary", "{{ 'a' if n == 1 else 'b' if n == 2 else 'c' }}", {"n": 2}),
    # access
    ("subscript and attribute", "{{ m['role'] }} {{ m.role }} {{ m.content }} {{ xs[0] }} {{ xs[-1] }} {{ xs.1 }}", {"m": MSGS[0], "xs": [1, 2, 3]}),
    ("slices", "{{ xs[1:] }} {{ xs[:2] }} {{ xs[::-1] }} {{ xs[::2] }} {{ xs[-2:] }} {{ xs[1:-1] }} {{ 'abcdef'[1:4] }} {{ xs[5:] }}", {"xs": [1, 2, 3, 4]}),
    ("huge steps and repeats", "{{ '' * 9223372036854775807 }}|{{ [1, 2, 3][::9223372036854775807] }}|{{ [1, 2, 3][::-9223372036854775807] }}|{{ 'abc'[-9223372036854775807:] }}|{{ [] * 9223372036854775807 }}", {}),
    ("missing key is undefined", "[{{ m.nothing }}][{{ m['nothing'] }}][{{ xs[9] }}]{{ m.nothing is defined }}", {"m": {"a": 1}, "xs": [1]}),
    ("dict methods", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }}", {"d": {"a": 1, "b": 2}}),
    ("dict keys named like methods", "{{ d['items'] }} {{ d.x }}", {"d": {"items": 7, "x": 1}}),
    # strings
    ("string methods", "{{ '  a b  '.strip() }}|{{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}", {}),
    ("string predicates", "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'x'.endswith('xy') }}", {}),
    ("string case", "{{ 'hEllo wOrld'.upper() }} {{ 'HeLLo'.lower() }} {{ 'hello world-x'.title() }} {{ 'hELLO'.capitalize() }} {{ 'ab'.replace('a', 'xy') }} {{ 'aaa'.replace('a', 'b', 2) }}", {}),
    ("string find count join", "{{ 'hello'.find('l') }} {{ 'hello'.find('z') }} {{ 'hello'.count('l') }} {{ '-'.join(['a', 'b', 'c']) }}", {}),
    # filters
    ("trim and length", "[{{ '  x  ' | trim }}][{{ 'xxhixx' | trim('x') }}] {{ 'abc' | length }} {{ [1, 2] | count }} {{ {'a': 1} | length }} {{ nothing | length }}", {}),
    ("tojson", "{{ m | tojson }}|{{ 'é\"\\n' | tojson }}|{{ [1, 2.5, none, true] | tojson }}|{{ {} | tojson }}", {"m": MSGS[0]}),
    ("tojson indent", "{{ d | tojson(indent=2) }}", {"d": {"name": "f", "args": {"x": [1, 2], "y": {}}, "z": []}}),
    ("tojson indent 4 and sort", "{{ d | tojson(indent=4, sort_keys=true) }}", {"d": {"b": 1, "a": [True]}}),
    ("tojson ensure_ascii", "{{ s | tojson(ensure_ascii=true) }} {{ s | tojson(true) }} {{ {'é': s} | tojson }}", {"s": "é→🙂\x01"}),
    ("tojson separators", "{{ d | tojson(separators=(',', ':')) }}", {"d": {"a": [1, 2]}}),
    ("case filters", "{{ 'hello world' | upper }} {{ 'HeLLo' | lower }} {{ 'hello big-world (x' | title }} {{ 'hELLO wORLD' | capitalize }}", {}),
    ("replace filter", "{{ 'a-b-c' | replace('-', '+') }} {{ 'aaa' | replace('a', 'b', 1) }}", {}),
    ("join filter", "{{ [1, 2, 3] | join(', ') }} {{ ['a', 'b'] | join }} {{ ms | join('/', attribute='role') }}", {"ms": MSGS[:2]}),
    ("first last", "{{ [1, 2, 3] | first }} {{ [1, 2, 3] | last }} {{ 'abc' | first }} {{ 'abc' | last }} [{{ [] | first }}]", {}),
    ("default", "{{ x | default('d') }} {{ y | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }} {{ x | d('e') }} {{ none | default('n') }}", {"y": "set"}),
    ("string int float", "{{ 5 | string }}{{ [1] | string }} {{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 3 | float }} {{ 'q' | float }}", {}),
    ("list filter", "{{ 'abc' | list }} {{ {'a': 1, 'b': 2} | list }} {{ [1, 2] | list }}", {}),
    ("items filter", "{% for k, v in d | items %}{{ k }}={{ v }};{% endfor %}", {"d": {"x": 1, "y": [2]}}),
    ("selectattr rejectattr", "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }} {{ ms | rejectattr('role', 'equalto', 'user') | list | length }}", {"ms": MSGS}),
    ("selectattr defined", "{{ ms | selectattr('tool_calls', 'defined') | list | length }} {{ ms | selectattr('x') | list }}", {"ms": [{"role": "a", "tool_calls": [1]}, {"role": "b", "x": 0}]}),
    ("select reject", "{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }} {{ [0, 1, '', 'a'] | select | list }} {{ [1, 5, 9] | select('gt', 3) | list }}", {}),
    ("map", "{{ ['a', 'B'] | map('upper') | list }} {{ ms | map(attribute='role') | join(',') }} {{ [{'a': 1}, {}] | map(attribute='a', default=0) | list }}", {"ms": MSGS[:2]}),
    ("safe escape round abs", "{{ '<b>' | safe }} {{ '<a href=\"x\">&\\'' | escape }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 1.25 | round(1, 'floor') }} {{ 1.21 | round(1, 'ceil') }} {{ -3 | abs }} {{ -2.5 | abs }}", {}),
    ("unique sort", "{{ [3, 1, 'a', 'A', 1] | unique | list }} {{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} {{ ms | sort(attribute='role') | map(attribute='role') | list }}", {"ms": MSGS}),
    ("min max sum reverse", "{{ [3, 1, 2] | min }} {{ [3, 1, 2] | max }} {{ [1, 2, 3] | sum }} {{ [1, 2] | reverse | list }} {{ 'abc' | reverse }} {{ {'b': 1, 'a': 2} | dictsort }}", {}),
    ("indent", "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}", {}),
    ("indent splits lines as Python does", "{{ s | indent(2) }}|{{ s | indent(2, blank=true) }}", {"s": "a\fb\r\nc\n\nd"}),
    ("filter chain precedence", "{{ 'a' + x | trim + 'b' }} {{ -3 | abs }} {{ xs | length > 1 }}", {"x": "  y  ", "xs": [1, 2]}),
    # tests
    ("is tests", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} {{ 1 is none }} {{ 'a' is string }} {{ 1 is string }} {{ {} is mapping }} {{ [] is mapping }}", {"x": 0}),
    ("is number tests", "{{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 'a' is number }} {{ 1 is integer }} {{ 1.0 is integer }} {{ 1.0 is float }} {{ true is boolean }} {{ 1 is boolean }}", {}),
    ("is iterable sequence", "{{ [] is iterable }} {{ '' is iterable }} {{ {} is iterable }} {{ 1 is iterable }} {{ [] is sequence }} {{ 'a' is sequence }} {{ 1 is sequence }}", {}),
    ("is with arguments", "{{ 4 is divisibleby 2 }} {{ 3 is divisibleby(2) }} {{ 3 is odd }} {{ 3 is even }} {{ 1 is eq 1 }} {{ 'a' is in 'abc' }} {{ x is sameas none }} {{ true is true }} {{ 1 is true }} {{ false is false }}", {"x": None}),
    ("is not", "{{ x is not none }} {{ y is not defined }} {{ not y is defined }} {{ 'a' is not string }}", {"x": 1}),
    ("is lower upper", "{{ 'abc' is lower }} {{ 'Abc' is lower }} {{ 'ABC' is upper }}", {}),
    # control flow
    ("if elif else", "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %} {% endfor %}", {}),
    ("for loop variables", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}", {}),
    ("loop prev next cycle", "{% for x in [1, 2, 3] %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }} {{ loop.cycle('odd', 'even') }};{% endfor %}", {}),
    ("for else", "{% for x in [] %}x{% else %}empty{% endfor %} {% for x in xs if x > 5 %}{{ x }}{% else %}none above five{% endfor %}", {"xs": [1, 2]}),
    ("for filter and loop index", "{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.role }}/{{ loop.length }} {% endfor %}", {"messages": MSGS}),
    ("tuple unpacking", "{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %} {% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %} {% for (a, b) in [(1, 2)] %}{{ a }}{{ b }}{% endfor %}", {"d": {"x": 1, "y": 2}}),
    ("for over dict and string", "{% for k in d %}{{ k }}{% endfor %} {% for c in 'hé' %}[{{ c }}]{% endfor %} {% for x in nothing %}x{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("break continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("nested loops", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.index }};{% endfor %}", {}),
    ("range", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }} {{ range(0) | list }}", {}),
    ("set", "{% set x = 1 %}{% set y = x + 1 %}{{ x }}{{ y }}{% set a, b = [3, 4] %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t | length }}", {}),
    ("set inside loop does not leak", "{% set x = 0 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}|{{ x }}", {}),
    ("namespace", "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.found = true %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}", {"messages": MSGS}),
    ("namespace list accumulation", "{% set ns = namespace(items=[]) %}{% for x in [1, 2, 3] %}{% set ns.items = ns.items + [x * 2] %}{% endfor %}{{ ns.items }}", {}),
    ("block set", "{% set body %}Hello {{ name }}!{% endset %}[{{ body }}] {% set t | upper %}shout{% endset %}{{ t }}", {"name": "you"}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c', punct='.') }}", {}),
    ("macro sees globals", "{% macro role(m) %}<{{ m.role }}|{{ bos_token }}>{% endmacro %}{% for m in messages %}{{ role(m) }}{% endfor %}", {"messages": MSGS[:2], "bos_token": "<s>"}),
    ("filter block", "{% filter upper %}abc {{ 'd' }}{% endfilter %}", {}),
    ("with block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", {}),
    ("raw block", "{% raw %}{{ not rendered }} {% if %}{% endraw %}", {}),
    ("comments", "a{# comment #}b{#- strip -#}  c {# multi\nline #}d", {}),
    ("dict literal and items order", "{% set d = {'z': 1, 'a': 2} %}{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %} {{ d | tojson }}", {}),
    ("undefined prints empty", "[{{ nothing }}][{{ nothing ~ 'x' }}]{{ nothing | default('dflt') }}{% if nothing %}yes{% else %}no{% endif %}", {}),
    ("raise_exception", "{% if x %}{{ raise_exception('Bad input: ' ~ x) }}{% endif %}ok", {"x": 7}),
    ("undefined attribute of undefined", "{{ nothing.attr }}", {}),
    ("undefined arithmetic", "{{ nothing + 1 }}", {}),
    ("type error", "{{ 'a' + 1 }}", {}),
    ("immutable list", "{% set xs = [1] %}{{ xs.append(2) }}", {}),
    ("division by zero", "{{ 1 / 0 }}", {}),
    ("unknown filter in an untaken branch", "{% if false %}{{ x | nope }}{% elif false %}{{ x is nope }}{% else %}ok{% endif %} {{ (x | nope) if false else 1 }}", {}),
    ("unknown filter in a taken branch", "{% if true %}{{ 1 | nope }}{% endif %}", {}),
    # whitespace control
    ("dash strips", "a  {{- 'b' -}}  c\n  {%- if true -%}  d  {%- endif -%}  e", {}),
    ("trim_blocks", "{% if true %}\nx\n{% endif %}\ny", {}),
    ("lstrip_blocks", "  {% if true %}\n  x\n  {% endif %}\n", {}),
    ("lstrip not for expressions", "  {{ 'x' }}\n  {% set y = 1 %}  z", {}),
    ("lstrip only at line start", "a {% if true %}b{% endif %} c", {}),
    ("plus disables lstrip and trim", "  {%+ if true +%}\nx{% endif %}", {}),
    ("comment lines vanish", "a\n  {# note #}\nb", {}),
    ("trailing newline dropped once", "line\n\n", {}),
    ("crlf normalised", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc", {}),
    ("indented chat template", "{%- for m in messages %}\n    {%- if m.role == 'user' %}\n        {{- '[U] ' + m.content }}\n    {%- else %}\n        {{- '[' + m.role[0] + '] ' + m.content }}\n    {%- endif %}\n    {{- '\\n' }}\n{%- endfor %}\n", {"messages": MSGS}),
    ("nested braces in expression", "{{ {'a': {'b': 1}} }}{{ {'a': {'b': [1]}}['a']['b'][0] }}", {}),
]


def main(out_path):
    cases = []
    for name, tmpl, ctx in CASES:
        case = {"name": name, "template": tmpl, "context": ctx}
        try:
            case["expected"] = env.from_string(tmpl).render(**ctx)
        except Exception as e:  # the message of the reference error
            case["error"] = str(e)
        cases.append(case)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"generator": "jinja2 " + jinja2.__version__ + ", transformers' environment",
                   "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "jinja_cases.json")
