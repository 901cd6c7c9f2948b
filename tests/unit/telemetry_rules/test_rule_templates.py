"""The Go template subset of rule annotations and labels: what Prometheus users write
expands as Prometheus expands it (cases from Prometheus's template tests), what is not
supported or does not parse is an error naming where, and Go's number formatting."""

from __future__ import annotations

import math

import pytest

from geoplex.servers.telemetry.rules.gofmt import format_e, format_g, sprintf
from geoplex.servers.telemetry.rules.templates import Template, TemplateData, TemplateError

DATA = TemplateData(labels={"__name__": "up", "instance": "node-1.example.com:9100",
                            "job": "api"},
                    value=0.05234, external_labels={"cluster": "eu-1"},
                    external_url="https://prom.example.com/prometheus")


def expand(text: str, data: TemplateData = DATA) -> str:
    return Template(text).expand(data)


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ $labels.instance }} is down", "node-1.example.com:9100 is down"),
    ("{{ .Labels.job }}", "api"),
    ("{{ $value }}", "0.05234"),
    ("{{ .Value }}", "0.05234"),
    ("{{ $value | humanize }}", "52.34m"),
    ("{{ humanizePercentage $value }}", "5.234%"),
    ('{{ printf "%.2f" $value }}', "0.05"),
    ('{{ printf "%.1f%%" (humanizePercentage 0.5 | len) }}', "%!f(int=3)%"),
    ("{{ $externalLabels.cluster }}", "eu-1"),
    ("{{ .ExternalLabels.cluster }}/{{ $externalURL }}", "eu-1/https://prom.example.com/prometheus"),
    ("{{ $labels.missing }}|", "|"),
    ('{{ if gt $value 0.05 }}high{{ else }}low{{ end }}', "high"),
    ('{{ if gt $value 1 }}high{{ else if gt $value 0.01 }}raised{{ end }}', "raised"),
    ('{{ if and (eq $labels.job "api") (ne $labels.instance "") }}yes{{ end }}', "yes"),
    ('{{ if not (match "^db" $labels.job) }}not a db{{ end }}', "not a db"),
    ("{{ with $labels.job }}job={{ . }}{{ end }}{{ with $labels.none }}x{{ else }}-{{ end }}",
     "job=api-"),
    ("{{ range $name, $v := $labels }}{{ $name }}={{ $v }};{{ end }}",
     "__name__=up;instance=node-1.example.com:9100;job=api;"),
    ("{{ $x := 3 }}{{ $x }}{{ $x = 4 }}{{ $x }}", "34"),
    ("{{- /* a comment */ -}}\n  a {{- ` b ` -}}  c", "a b c"),
    ("{{ $labels.instance | stripPort }} {{ stripDomain $labels.instance }}",
     "node-1.example.com node-1:9100"),
    ('{{ reReplaceAll "(.+):(\\\\d+)" "$2 on $1" $labels.instance }}',
     "9100 on node-1.example.com"),
    ('{{ title "hello world" }} {{ toUpper "a" }} {{ toLower "B" }}', "Hello World A b"),
    ('{{ index $labels "job" }} {{ len $labels }} {{ print 1 2 "x" }}', "api 3 1 2x"),
    ('{{ "5m" | parseDuration }}', "300"),
    ('{{ graphLink "up == 0" }}', "/graph?g0.expr=up+%3D%3D+0&g0.tab=0"),
    ('{{ "<b>" | html }}', "&lt;b&gt;"),
])
def test_prometheus_templates_expand_as_prometheus_expands_them(text: str,
                                                                expected: str) -> None:
    assert expand(text) == expected


@pytest.mark.parametrize(("function", "values", "expected"), [
    ("humanize", [0.0, 1.0, 1234567.0, 0.12], "0:1:1.235M:120m:"),
    ("humanize", [math.nan, math.inf, -math.inf, 1e-30], "NaN:+Inf:-Inf:1e-06y:"),
    ("humanize1024", [0.0, 1.0, 1048576.0, 0.12], "0:1:1Mi:0.12:"),
    ("humanizeDuration", [0.0, 1.0, 60.0, 3600.0, 86400.0, 86400.0 + 3600.0,
                          -(86400 * 2 + 3600 * 3 + 60 * 4 + 5.0), 899.99],
     "0s:1s:1m 0s:1h 0m 0s:1d 0h 0m 0s:1d 1h 0m 0s:-2d 3h 4m 5s:14m 59s:"),
    ("humanizeDuration", [0.1, 0.0001, 0.12345, 60.1, 60.5, 1.2345, 12.345],
     "100ms:100us:123.5ms:1m 0s:1m 0s:1.234s:12.35s:"),
    ("humanizePercentage", [0.0, 0.1234567, 0.5, 1.0, 1.5], "0%:12.35%:50%:100%:150%:"),
    ("humanizeTimestamp", [1435065584.128], "2015-06-23 13:19:44.128 +0000 UTC:"),
])
def test_the_humanize_functions_match_prometheus(function: str, values: list[float],
                                                 expected: str) -> None:
    template = Template(f"{{{{ {function} $value }}}}:")
    assert "".join(template.expand(TemplateData(value=v)) for v in values) == expected


def test_humanize_takes_numeric_strings_and_fails_on_others() -> None:
    assert expand('{{ humanize "1234" }}') == "1.234k"
    assert Template('{{ humanize "fast" }}').expand_or_error(DATA) == (
        '<error expanding template: template: 1:4: error calling humanize: '
        'strconv.ParseFloat: parsing "fast": invalid syntax>')


@pytest.mark.parametrize(("text", "message"), [
    ("{{ $labels.job | nope }}", 'template: 1:18: function "nope" not defined'),
    ('{{ query "up" }}', 'template: 1:4: function "query" is not supported: queries from '
                         "templates are not supported"),
    ("{{ $undefined }}", 'template: 1:4: undefined variable "$undefined"'),
    ("{{ if $value }}never closed", "template: 1:4: unexpected EOF: {{if}} has no {{end}}"),
    ("text {{ end }}", "template: 1:6: unexpected {{end}}"),
    ("{{ $labels.job", "template: 1:1: unclosed action"),
    ('{{ define "x" }}{{ end }}', "template: 1:4: {{define}} is not supported"),
    ('{{ template "x" }}', "template: 1:4: {{template}} is not supported"),
    ("{{ $labels.job | }}", "template: 1:16: missing command after |"),
    ('{{ "a""b" }}', "template: 1:7: unexpected '\"b\"' in operand (missing space?)"),
    ('{{ "unterminated }}', "template: 1:4: unterminated quoted string"),
    ("{{ ! }}", "template: 1:4: unrecognized character in action: U+0021 '!'"),
    ("{{ if }}{{ end }}", "template: 1:4: missing value for if"),
])
def test_a_template_that_does_not_parse_is_an_error_naming_where(text: str,
                                                                 message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        Template(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("text", "message"), [
    ("{{ .Nope }}", "template: 1:4: can't evaluate field Nope (the data has Labels, Value, "
                    "ExternalLabels, ExternalURL)"),
    ("{{ $labels.job.deeper }}", "template: 1:4: can't evaluate field deeper in type string"),
    ("{{ humanize 1 2 }}", "template: 1:4: wrong number of args for humanize: want 1 got 2"),
    ("{{ $value 1 }}", "template: 1:4: can't give argument to non-function $value"),
    ("{{ index $labels 3 }}", "template: 1:4: error calling index: value has type int; "
                              "should be string"),
    ('{{ lt "a" 1 }}', "template: 1:4: error calling lt: incompatible types for comparison"),
])
def test_an_expansion_that_fails_says_why_as_prometheus_shows_it(text: str,
                                                                 message: str) -> None:
    template = Template(text)
    with pytest.raises(TemplateError) as caught:
        template.expand(DATA)
    assert str(caught.value) == message
    assert template.expand_or_error(DATA) == f"<error expanding template: {message}>"


@pytest.mark.parametrize(("value", "g", "e"), [
    (0.0, "0", "0e+00"), (1.0, "1", "1e+00"), (100000.0, "100000", "1e+05"),
    (1e6, "1e+06", "1e+06"), (1234567.0, "1.234567e+06", "1.234567e+06"),
    (0.0001, "0.0001", "1e-04"), (0.00001, "1e-05", "1e-05"), (-2.5, "-2.5", "-2.5e+00"),
    (0.1 + 0.2, "0.30000000000000004", "3.0000000000000004e-01"),
    (math.inf, "+Inf", "+Inf"), (-math.inf, "-Inf", "-Inf"), (math.nan, "NaN", "NaN"),
])
def test_floats_print_as_go_prints_them(value: float, g: str, e: str) -> None:
    assert (format_g(value), format_e(value)) == (g, e)


@pytest.mark.parametrize(("fmt", "args", "expected"), [
    ("%.2f", [3.14159], "3.14"), ("%5.1f|", [2.25], "  2.2|"), ("%-6d|", [42], "42    |"),
    ("%05d", [-42], "-0042"), ("%+d", [5], "+5"), ("%x %X %#x", [255, 255, 255], "ff FF 0xff"),
    ("%s=%q", ["a", "b c"], 'a="b c"'), ("%v %v %v", [1.5, 2, True], "1.5 2 true"),
    ("%g %e", [1e6, 1234.5], "1e+06 1.234500e+03"), ("%t", [False], "false"),
    ("100%%", [], "100%"), ("%d", [1.5], "%!d(float64=1.5)"), ("%s", [2.0], "%!s(float64=2)"),
    ("%d %d", [1], "1 %!d(MISSING)"), ("%d", [1, "x"], "1%!(EXTRA string=x)"),
    ("%f", [math.inf], "+Inf"), ("%.3s", ["abcdef"], "abc"), ("50%", [], "50%!(NOVERB)"),
])
def test_printf_formats_as_go_sprintf(fmt: str, args: list[object], expected: str) -> None:
    assert sprintf(fmt, args) == expected
