"""The config: YAML → validated pydantic models; ``${ENV}`` and ``*_file`` secrets;
errors as FILE:LINE:COL."""

from feedsvc.config.load import LoadedConfig, load_config
from feedsvc.config.schema import (
    Config,
    Duration,
    FetchConfig,
    HttpConfig,
    MailConfig,
    Name,
    SmtpConfig,
    SourceConfig,
    SubscriberConfig,
    SubscriptionConfig,
    TimeZoneName,
    parse_duration,
)
from feedsvc.config.yaml_reader import MAX_CONFIG_VALUES

__all__ = [
    "MAX_CONFIG_VALUES",
    "Config",
    "Duration",
    "FetchConfig",
    "HttpConfig",
    "LoadedConfig",
    "MailConfig",
    "Name",
    "SmtpConfig",
    "SourceConfig",
    "SubscriberConfig",
    "SubscriptionConfig",
    "TimeZoneName",
    "load_config",
    "parse_duration",
]
