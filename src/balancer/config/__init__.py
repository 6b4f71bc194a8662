"""Configuration: TOML file -> validated, frozen `Config`; every problem with FILE:LINE."""

from balancer.config.load import ConfigError, Problem, load_config, parse_config, read_config_text
from balancer.config.model import Config

__all__ = ["Config", "ConfigError", "Problem", "load_config", "parse_config", "read_config_text"]
