/**
 * Warnings: things a caller should know although the request succeeded, such as a deprecated
 * model version. They travel in `extensions.warnings` of a response (or of a stream's first
 * result): subgraphs put them there, the router lifts them from subgraph responses into its own.
 */
export interface Warning {
  code: 'MODEL_DEPRECATED';
  message: string;
  [detail: string]: unknown;
}

export const WARNINGS_EXTENSION = 'warnings';

export function warningsOf(extensions: Record<string, unknown> | undefined | null): Warning[] {
  const value = extensions?.[WARNINGS_EXTENSION];
  return Array.isArray(value) ? (value as Warning[]) : [];
}
