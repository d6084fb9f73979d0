export { type AuthRole, type AuthToken, describeRole, parseAuthTokens } from "./auth-tokens.js";
export {
  ConfigError,
  type ConfigInput,
  type ConfigKey,
  type ConfigKeyName,
  type ConfigSection,
  type ConfigValueSource,
  configKey,
  configKeys,
  configSections,
  type LogLevel,
  logLevels,
  type ParseResult,
  type RateLimitedRole,
  type RoleRateLimits,
  rateLimitedRoles,
} from "./keys.js";
export {
  type AppConfig,
  type ConfigSources,
  type ConnectionLimits,
  type DlqSettings,
  type EffectiveConfigValue,
  type LoadedConfig,
  loadConfig,
  type OutboundSettings,
  type RateLimitSettings,
  type RedisSettings,
  type SagaSettings,
  type TlsFiles,
  type TracingSettings,
} from "./load-config.js";
export { getSecret, type Secret, type SecretSources } from "./secrets.js";
