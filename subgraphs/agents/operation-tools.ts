/**
 * Agent tools: GraphQL operations on our public API, offered to a model as functions. A tool is
 * compiled once — parsed, validated against the schema, its variables described as the JSON
 * Schema of the arguments object — and every call's arguments are coerced exactly as the server
 * coerces variables, so refused arguments go back to the model before anything runs.
 */
import {
  GraphQLError,
  Kind,
  OperationTypeNode,
  TokenKind,
  TypeInfo,
  astFromValue,
  getNamedType,
  getVariableValues,
  isEnumType,
  isInputObjectType,
  isInputType,
  isListType,
  isNonNullType,
  isRequiredInputField,
  isScalarType,
  parse,
  typeFromAST,
  validate,
  valueFromASTUntyped,
  visit,
  visitWithTypeInfo,
  type ASTNode,
  type DocumentNode,
  type GraphQLEnumType,
  type GraphQLInputField,
  type GraphQLInputObjectType,
  type GraphQLInputType,
  type GraphQLScalarType,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type ValueNode,
  type VariableDefinitionNode,
} from 'graphql';

/** Longer documents are refused: a tool is one operation, and every call re-sends it. */
export const MAX_DOCUMENT_LENGTH = 20_000;
/** Lexical tokens a tool document may have (the router's edge refuses long documents too). */
const MAX_DOCUMENT_TOKENS = 5_000;
/** What OpenAI, Anthropic and Gemini all accept as a function name. */
const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Most problems listed in one refusal. */
const MAX_PROBLEMS = 10;

/** A tool definition that cannot be offered; `field` names the part of it at fault. */
export class ToolDefinitionError extends Error {
  override readonly name = 'ToolDefinitionError';

  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

export type JsonSchema = Record<string, unknown>;

export type CoercedArguments = { ok: true; variables: Record<string, unknown> } | { ok: false; errors: string[] };

export interface OperationTool {
  name: string;
  /**
   * The given description, else the operation's own (its `"""` description, else the `#` comment
   * lines right above it), else a generated one naming the operation.
   */
  description: string;
  /** The document as given (sent to the router verbatim). */
  document: string;
  operationName: string | undefined;
  operationType: 'query' | 'mutation';
  /** JSON Schema (draft 2020-12 subset every major provider accepts) of the arguments object. */
  parameters: JsonSchema;
  /**
   * Checks and coerces the model's arguments (an already-parsed JSON value) exactly as the
   * GraphQL server coerces variables, and refuses arguments the operation does not declare: ok
   * with the coerced variables (defaults filled in), or up to 10 problems, each naming the
   * variable path.
   */
  coerce(args: unknown): CoercedArguments;
}

/** Parses and validates a tool against the schema, or throws ToolDefinitionError. */
export function compileOperationTool(
  schema: GraphQLSchema,
  tool: { name: string; description: string | null; document: string },
): OperationTool {
  if (!TOOL_NAME.test(tool.name)) {
    throw new ToolDefinitionError('name', `The tool name ${JSON.stringify(tool.name)} must be 1 to 64 letters, digits, "_" or "-".`);
  }
  const document = parseDocument(tool.document);
  const operation = onlyOperation(document);
  const problems = validate(schema, document);
  if (problems.length > 0) {
    throw new ToolDefinitionError('document', `The document does not validate against the schema: ${listProblems(problems)}`);
  }
  const definitions = operation.variableDefinitions ?? [];
  return {
    name: tool.name,
    description: nonBlank(tool.description) ?? operationDescription(operation) ?? generatedDescription(operation),
    document: tool.document,
    operationName: operation.name?.value,
    operationType: operation.operation === OperationTypeNode.MUTATION ? 'mutation' : 'query',
    parameters: parametersSchema(schema, document, definitions),
    coerce: (args) => coerceArguments(schema, definitions, args),
  };
}

/** Parses the model's argument text: a JSON object (empty text counts as {}), or the problem. */
export function parseToolArguments(text: string): { ok: true; value: Record<string, unknown> } | { ok: false; error: string } {
  if (text.trim() === '') return { ok: true, value: {} };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, error: `The arguments are not valid JSON: ${error instanceof Error ? error.message : String(error)}` };
  }
  return isJsonObject(value) ? { ok: true, value } : { ok: false, error: notAnObject(value) };
}

// --- the document ------------------------------------------------------------------------------

function parseDocument(text: string): DocumentNode {
  if (text.length > MAX_DOCUMENT_LENGTH) {
    throw new ToolDefinitionError(
      'document',
      `The document is ${text.length} characters long; at most ${MAX_DOCUMENT_LENGTH} are allowed.`,
    );
  }
  try {
    return parse(text, { maxTokens: MAX_DOCUMENT_TOKENS });
  } catch (error) {
    // Nesting deep enough to exhaust the parser's stack is refused like any other bad document.
    if (error instanceof RangeError) throw new ToolDefinitionError('document', 'The document is nested too deeply.');
    if (!(error instanceof GraphQLError)) throw error;
    throw new ToolDefinitionError('document', `The document does not parse: ${describeProblem(error)}`);
  }
}

function onlyOperation(document: DocumentNode): OperationDefinitionNode {
  const operations = document.definitions.filter((definition) => definition.kind === Kind.OPERATION_DEFINITION);
  const [operation] = operations;
  if (operations.length !== 1 || !operation) {
    throw new ToolDefinitionError(
      'document',
      `The document must contain exactly one operation (fragments may accompany it); it has ${operations.length}.`,
    );
  }
  if (operation.operation === OperationTypeNode.SUBSCRIPTION) {
    throw new ToolDefinitionError(
      'document',
      'The operation is a subscription; a tool must be a query or a mutation, because it returns one result.',
    );
  }
  return operation;
}

function listProblems(problems: readonly GraphQLError[]): string {
  const listed = problems.slice(0, MAX_PROBLEMS).map(describeProblem).join(' ');
  const more = problems.length - MAX_PROBLEMS;
  return more > 0 ? `${listed} (and ${more} more)` : listed;
}

function describeProblem(error: GraphQLError): string {
  const location = error.locations?.[0];
  return location ? `${error.message} (line ${location.line}, column ${location.column})` : error.message;
}

// --- the description ---------------------------------------------------------------------------

function nonBlank(text: string | null | undefined): string | undefined {
  return text && text.trim() !== '' ? text : undefined;
}

function operationDescription(operation: OperationDefinitionNode): string | undefined {
  return nonBlank(operation.description?.value) ?? nonBlank(leadingComment(operation));
}

/**
 * The `#` lines directly above the operation (no blank line between), each without its `#` and
 * one space. A comment that ends a line of code belongs to that code, so it is not included.
 */
function leadingComment(operation: OperationDefinitionNode): string {
  let below = operation.loc?.startToken;
  let token = below?.prev;
  const lines: string[] = [];
  while (below && token?.kind === TokenKind.COMMENT && token.line === below.line - 1) {
    lines.unshift(token.value.replace(/^ /, '').trimEnd());
    below = token;
    token = token.prev;
  }
  if (below && token && token.kind !== TokenKind.SOF && token.line === below.line) lines.shift();
  return lines.join('\n').trim();
}

function generatedDescription(operation: OperationDefinitionNode): string {
  const fields = new Set(
    operation.selectionSet.selections.flatMap((selection) => (selection.kind === Kind.FIELD ? [selection.name.value] : [])),
  );
  const name = operation.name ? ` ${operation.name.value}` : '';
  const selects = fields.size > 0 ? ` (selects ${[...fields].join(', ')})` : '';
  return `Runs the GraphQL ${operation.operation}${name}${selects}.`;
}

// --- the arguments' JSON Schema ----------------------------------------------------------------

const JSON_TYPE_OF_SCALAR: Readonly<Record<string, string>> = {
  Int: 'integer',
  Float: 'number',
  String: 'string',
  ID: 'string',
  Boolean: 'boolean',
};

/**
 * Optional values are not in `required` and keep their plain type (no `null` unions, which some
 * providers refuse); an empty `required` is left out.
 */
function objectSchema(properties: Record<string, JsonSchema>, required: string[], description?: string | null): JsonSchema {
  return {
    type: 'object',
    ...(nonBlank(description) && { description }),
    properties,
    ...(required.length > 0 && { required }),
    additionalProperties: false,
  };
}

function parametersSchema(schema: GraphQLSchema, document: DocumentNode, definitions: readonly VariableDefinitionNode[]): JsonSchema {
  const usage = usageDescriptions(schema, document);
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const definition of definitions) {
    const name = definition.variable.name.value;
    const type = typeFromAST(schema, definition.type);
    // Validation has checked that every variable's type exists and is an input type.
    if (!isInputType(type)) throw new Error(`Variable "$${name}" has no input type after validation`);
    const property = withDescription(inputTypeSchema(type, []), nonBlank(definition.description?.value) ?? usage.get(name));
    if (definition.defaultValue) property.default = valueFromASTUntyped(definition.defaultValue);
    else if (isNonNullType(type)) required.push(name);
    properties[name] = property;
  }
  return objectSchema(properties, required);
}

/**
 * A variable without a description of its own takes the description of the argument or input
 * field it is passed to (its first such use).
 */
function usageDescriptions(schema: GraphQLSchema, document: DocumentNode): Map<string, string> {
  const found = new Map<string, string>();
  const typeInfo = new TypeInfo(schema);
  const describe = (parent: ASTNode | readonly ASTNode[] | undefined): string | null | undefined => {
    if (!parent || !('kind' in parent)) return undefined;
    if (parent.kind === Kind.ARGUMENT) return typeInfo.getArgument()?.description;
    if (parent.kind !== Kind.OBJECT_FIELD) return undefined;
    const owner = getNamedType(typeInfo.getParentInputType());
    return isInputObjectType(owner) ? owner.getFields()[parent.name.value]?.description : undefined;
  };
  visit(
    document,
    visitWithTypeInfo(typeInfo, {
      Variable(node, _key, parent) {
        const description = nonBlank(describe(parent));
        if (description && !found.has(node.name.value)) found.set(node.name.value, description);
      },
    }),
  );
  return found;
}

/** `path`: the input object types being described around this one, to stop at recursion. */
function inputTypeSchema(type: GraphQLInputType, path: readonly string[]): JsonSchema {
  if (isNonNullType(type)) return inputTypeSchema(type.ofType, path);
  if (isListType(type)) return { type: 'array', items: inputTypeSchema(type.ofType, path) };
  if (isScalarType(type)) return scalarSchema(type);
  if (isEnumType(type)) return enumSchema(type);
  return inputObjectSchema(type, path);
}

function scalarSchema(scalar: GraphQLScalarType): JsonSchema {
  const type = JSON_TYPE_OF_SCALAR[scalar.name];
  if (type) return { type };
  const specifiedBy = scalar.specifiedByURL ? `Specified by ${scalar.specifiedByURL}.` : undefined;
  return { description: joinDescriptions(`Custom scalar ${scalar.name}.`, scalar.description, specifiedBy) };
}

/** Every value is allowed (the server accepts deprecated ones); the description marks them. */
function enumSchema(type: GraphQLEnumType): JsonSchema {
  const values = type.getValues();
  const notes = values
    .filter((value) => nonBlank(value.description) || value.deprecationReason != null)
    .map(
      (value) =>
        `- ${value.name}${value.description ? `: ${value.description}` : ''}${deprecation(value.deprecationReason, ' (deprecated: %)') ?? ''}`,
    );
  const description = joinDescriptions(type.description, notes.join('\n'));
  return { type: 'string', ...(description && { description }), enum: values.map((value) => value.name) };
}

function inputObjectSchema(type: GraphQLInputObjectType, path: readonly string[]): JsonSchema {
  if (path.includes(type.name)) return { type: 'object', description: `a ${type.name} (as above)` };
  const inner = [...path, type.name];
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const field of Object.values(type.getFields())) {
    properties[field.name] = inputFieldSchema(field, inner);
    if (isRequiredInputField(field)) required.push(field.name);
  }
  return objectSchema(properties, required, type.description);
}

function inputFieldSchema(field: GraphQLInputField, path: readonly string[]): JsonSchema {
  const property = withDescription(
    inputTypeSchema(field.type, path),
    joinDescriptions(field.description, deprecation(field.deprecationReason, 'Deprecated: %')),
  );
  const defaultValue = jsonDefault(field);
  if (defaultValue !== undefined) property.default = defaultValue;
  return property;
}

/**
 * The field's default as JSON (enums by name): the literal the SDL wrote, else the value turned
 * back into one; undefined when there is no default or it has no literal form.
 */
function jsonDefault(field: GraphQLInputField): unknown {
  if (field.defaultValue === undefined) return undefined;
  const literal = field.astNode?.defaultValue ?? defaultLiteral(field);
  return literal ? valueFromASTUntyped(literal) : undefined;
}

function defaultLiteral(field: GraphQLInputField): ValueNode | null | undefined {
  try {
    return astFromValue(field.defaultValue, field.type);
  } catch {
    // A custom scalar whose serialized default is no GraphQL literal: the default goes unmentioned.
    return undefined;
  }
}

function deprecation(reason: string | null | undefined, template: string): string | undefined {
  return reason == null ? undefined : template.replace('%', reason);
}

/** Puts the description of where a value goes before the description of its type. */
function withDescription(schema: JsonSchema, description: string | undefined): JsonSchema {
  if (!description) return { ...schema };
  const own = typeof schema.description === 'string' ? schema.description : undefined;
  return { ...schema, description: joinDescriptions(description, own) };
}

function joinDescriptions(...parts: (string | null | undefined)[]): string | undefined {
  const text = parts.filter((part): part is string => nonBlank(part) !== undefined).join('\n\n');
  return text === '' ? undefined : text;
}

// --- the arguments -----------------------------------------------------------------------------

function coerceArguments(schema: GraphQLSchema, definitions: readonly VariableDefinitionNode[], args: unknown): CoercedArguments {
  if (!isJsonObject(args)) return { ok: false, errors: [notAnObject(args)] };
  // getVariableValues ignores inputs it has no definition for; a model should hear about them.
  const names = definitions.map((definition) => definition.variable.name.value);
  const takes = names.length > 0 ? `this tool takes ${names.map((name) => `"${name}"`).join(', ')}` : 'this tool takes no arguments';
  const unknown = Object.keys(args)
    .filter((key) => !names.includes(key))
    .map((key) => `Unknown argument "${key}"; ${takes}.`);
  const result = getVariableValues(schema, definitions, args);
  const errors = [...unknown, ...(result.errors ?? []).map((error) => error.message)];
  if (errors.length > 0 || !result.coerced) return { ok: false, errors: errors.slice(0, MAX_PROBLEMS) };
  return { ok: true, variables: result.coerced };
}

function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function notAnObject(value: unknown): string {
  const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : value === undefined ? 'nothing' : `a ${typeof value}`;
  return `The arguments must be a JSON object; got ${kind}.`;
}
