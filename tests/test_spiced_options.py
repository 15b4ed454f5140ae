"""Spiced options: validation messages, defaults per strategy, and the config hook."""
from __future__ import annotations

from typing import Any

import pytest

from engine.config import ConfigError, parse_config
from engine.spiced import OPTIONS, default_blocked_regimes, resolve_options, validate_spiced_options


def test_defaults_are_valid_and_complete() -> None:
    assert validate_spiced_options({}) == {}
    opts = resolve_options({}, "sma_cross")
    assert set(opts) == set(OPTIONS)
    assert opts["risk_per_trade"] == 0.01 and opts["kelly_cap"] == 0.25 and opts["kelly_min_trades"] == 20
    assert validate_spiced_options({k: v for k, v in opts.items()}) == {}


@pytest.mark.parametrize("option, value, expected", [
    ("risk_per_trade", 0, "must be in (0, 0.1], got 0"),
    ("risk_per_trade", 0.2, "must be in (0, 0.1], got 0.2"),
    ("risk_per_trade", "1%", "must be a number in (0, 0.1], got '1%'"),
    ("kelly_cap", 1.5, "must be in (0, 1], got 1.5"),
    ("kelly_min_trades", 0, "must be in [1, 100000], got 0"),
    ("kelly_min_trades", 2.5, "must be an integer in [1, 100000], got 2.5"),
    ("kelly_min_trades", True, "must be an integer in [1, 100000], got True"),
    ("atr_stop_mult", float("nan"), "must be a number in (0, 100], got nan"),
    ("max_leverage", -1, "must be in (0, 1000], got -1"),
    ("vol_threshold", 1.01, "must be in [0, 1], got 1.01"),
    ("er_period", 1, "must be in [2, 10000], got 1"),
    ("blocked_regimes", ["sideways"], "must be a list (or comma-separated string) drawn from "
                                      "['warmup', 'trending_up', 'trending_down', 'ranging', 'volatile'], "
                                      "got ['sideways']"),
    ("blocked_regimes", "volatile,sideways", "must be a list (or comma-separated string) drawn from"),
    ("blocked_regimes", 3, "must be a list (or comma-separated string) drawn from"),
    ("regime_filter", "yes", "must be true or false, got 'yes'"),
    ("colour", 1, "unknown option; allowed: ['blocked_regimes', 'min_confidence'"),
])
def test_bad_option_gets_a_message_naming_allowed_values(option: str, value: Any, expected: str) -> None:
    errors = validate_spiced_options({option: value})
    assert list(errors) == [option]
    assert errors[option].startswith(expected), errors[option]


def test_parse_config_reports_spiced_fields_with_prefix() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"symbol": "SYNTH", "variant": "spiced",
                      "spiced": {"risk_per_trade": 0.5, "blocked_regimes": ["nope"]}})
    assert set(info.value.errors) == {"spiced.risk_per_trade", "spiced.blocked_regimes"}
    ok = parse_config({"symbol": "SYNTH", "variant": "spiced", "spiced": {"blocked_regimes": []}})
    assert ok.spiced == {"blocked_regimes": []}


def test_resolve_options_raises_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"`spiced.kelly_cap` must be in \(0, 1\]"):
        resolve_options({"kelly_cap": 0}, "sma_cross")


def test_strategy_aware_default_blocked_regimes() -> None:
    trend, mean_rev = ["volatile", "ranging"], ["volatile", "trending_up", "trending_down"]
    assert default_blocked_regimes("sma_cross") == trend
    assert default_blocked_regimes("donchian_breakout") == trend
    assert default_blocked_regimes("rsi_reversion") == mean_rev
    assert default_blocked_regimes("bollinger_reversion") == mean_rev

    class Mine:
        regime_style = "mean_reversion"

    assert default_blocked_regimes("mine", Mine()) == mean_rev
    assert default_blocked_regimes("mine", object()) == ["volatile"]
    # An explicit list (even empty) wins over the defaults.
    assert resolve_options({"blocked_regimes": []}, "sma_cross")["blocked_regimes"] == []
    # The CLI passes a comma-separated string.
    assert resolve_options({"blocked_regimes": "volatile, warmup"}, "x")["blocked_regimes"] == ["volatile", "warmup"]
