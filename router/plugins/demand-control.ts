/**
 * Demand control: the estimated cost of an operation from the schema's `@cost` and `@listSize`
 * (Federation 2.9's cost directives), refused before execution when it exceeds the caller's
 * tenant's maximum (`router.demandControl`), with the estimate in `extensions`.
 *
 * The estimate, per field: `multiplier × (weight + cost of its selections)`, where the weight is
 * the field's `@cost` or else 1 for object, interface and union types and 0 for leaves, and the
 * multiplier is 1, or for a list its size: the value of a `@listSize` slicing argument, else its
 * `assumedSize`, else `defaultListSize`. With `sizedFields` (connections), the size applies to
 * those child fields instead. Mutations add 10. Branches of abstract types add up (an upper bound).
 */
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import {
  Kind,
  getNamedType,
  getNullableType,
  getOperationAST,
  isCompositeType,
  isListType,
  isObjectType,
  isInterfaceType,
  valueFromASTUntyped,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLNamedType,
  type GraphQLSchema,
  type SelectionSetNode,
} from 'graphql';
import type { Config } from '../../platform/config.ts';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import { callerOf } from './identity.ts';

type Settings = Config['router']['demandControl'];

interface Walk {
  schema: GraphQLSchema;
  fragments: Record<string, FragmentDefinitionNode>;
  variables: Record<string, unknown>;
  defaultListSize: number;
  /** Set when a list size came from a variable: the estimate then holds for these variables only. */
  readVariables: boolean;
}

function directiveArguments(
  field: GraphQLField<unknown, unknown>,
  name: string,
  variables: Record<string, unknown>,
): Record<string, unknown> | undefined {
  const directive = field.astNode?.directives?.find((each) => each.name.value === name);
  if (!directive) return undefined;
  return Object.fromEntries(
    (directive.arguments ?? []).map((argument) => [argument.name.value, valueFromASTUntyped(argument.value, variables)]),
  );
}

/** The size a list field is assumed to have for this selection. */
function listSize(field: GraphQLField<unknown, unknown>, node: FieldNode, walk: Walk): { size: number; sizedFields: string[] } {
  const spec = directiveArguments(field, 'listSize', walk.variables) as
    | { assumedSize?: number; slicingArguments?: string[]; sizedFields?: string[] }
    | undefined;
  const sliced = (spec?.slicingArguments ?? [])
    .map((name) => {
      const argument = node.arguments?.find((each) => each.name.value === name);
      if (argument?.value.kind === Kind.VARIABLE) walk.readVariables = true;
      const value = argument
        ? valueFromASTUntyped(argument.value, walk.variables)
        : field.args.find((each) => each.name === name)?.defaultValue;
      return typeof value === 'number' ? value : undefined;
    })
    .filter((value): value is number => value !== undefined);
  const size = sliced.length ? Math.max(...sliced) : (spec?.assumedSize ?? walk.defaultListSize);
  return { size, sizedFields: spec?.sizedFields ?? [] };
}

function selectionCost(type: GraphQLNamedType | undefined, selections: SelectionSetNode, walk: Walk, sized: Map<string, number>): number {
  let total = 0;
  for (const selection of selections.selections) {
    if (selection.kind === Kind.FIELD) {
      total += fieldCost(type, selection, walk, sized.get(selection.name.value));
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      const narrowed = selection.typeCondition ? walk.schema.getType(selection.typeCondition.name.value) : type;
      total += selectionCost(narrowed, selection.selectionSet, walk, sized);
    } else {
      const fragment = walk.fragments[selection.name.value];
      if (fragment) total += selectionCost(walk.schema.getType(fragment.typeCondition.name.value), fragment.selectionSet, walk, sized);
    }
  }
  return total;
}

/** `sizedByParent`: the size a connection's `@listSize(sizedFields)` gives this field, if any. */
function fieldCost(parent: GraphQLNamedType | undefined, node: FieldNode, walk: Walk, sizedByParent: number | undefined): number {
  if (!parent || !(isObjectType(parent) || isInterfaceType(parent))) return 0;
  const field = parent.getFields()[node.name.value];
  if (!field) return 0;
  const named = getNamedType(field.type);
  const declared = directiveArguments(field, 'cost', walk.variables)?.weight;
  const weight = typeof declared === 'number' ? declared : isCompositeType(named) ? 1 : 0;
  let multiplier = sizedByParent ?? 1;
  let sized = new Map<string, number>();
  if (sizedByParent === undefined && (isListType(getNullableType(field.type)) || directiveArguments(field, 'listSize', walk.variables))) {
    const { size, sizedFields } = listSize(field, node, walk);
    if (sizedFields.length) sized = new Map(sizedFields.map((name) => [name, size]));
    else if (isListType(getNullableType(field.type))) multiplier *= size;
  }
  const children = node.selectionSet ? selectionCost(named, node.selectionSet, walk, sized) : 0;
  return multiplier * (weight + children);
}

/** Estimates of documents whose cost does not depend on variables, by operation name. */
const estimates = new WeakMap<DocumentNode, Map<string, number>>();

/** The estimated cost of the operation `document` selects (by `operationName`). */
export function estimateCost(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown>,
  defaultListSize: number,
): number {
  const cacheKey = `${defaultListSize}:${operationName ?? ''}`;
  const known = estimates.get(document)?.get(cacheKey);
  if (known !== undefined) return known;
  const { cost, readVariables } = walkCost(schema, document, operationName, variables, defaultListSize);
  if (!readVariables) estimates.set(document, (estimates.get(document) ?? new Map<string, number>()).set(cacheKey, cost));
  return cost;
}

function walkCost(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown>,
  defaultListSize: number,
): { cost: number; readVariables: boolean } {
  const operation = getOperationAST(document, operationName);
  if (!operation) return { cost: 0, readVariables: false };
  const fragments = Object.fromEntries(
    document.definitions
      .filter((definition): definition is FragmentDefinitionNode => definition.kind === Kind.FRAGMENT_DEFINITION)
      .map((fragment) => [fragment.name.value, fragment]),
  );
  const root = schema.getRootType(operation.operation) ?? undefined;
  const walk: Walk = { schema, fragments, variables, defaultListSize, readVariables: false };
  const cost = (operation.operation === 'mutation' ? 10 : 0) + selectionCost(root, operation.selectionSet, walk, new Map());
  return { cost, readVariables: walk.readVariables };
}

export function useDemandControl(settings: Settings, onRefused: () => void = () => undefined): GatewayPlugin {
  const refuseIfTooExpensive = (args: {
    schema: GraphQLSchema;
    document: DocumentNode;
    operationName?: string | null;
    variableValues?: unknown;
    contextValue: unknown;
  }) => {
    const cost = estimateCost(
      args.schema,
      args.document,
      args.operationName,
      (args.variableValues ?? {}) as Record<string, unknown>,
      settings.defaultListSize,
    );
    const tenant = callerOf(args.contextValue).principal?.tenantId;
    const maxCost = (tenant !== undefined ? settings.tenants[tenant] : undefined) ?? settings.maxCost;
    if (cost <= maxCost) return undefined;
    onRefused();
    return codedError(
      ErrorCode.COST_ESTIMATED_TOO_EXPENSIVE,
      `the operation's estimated cost ${cost} is over this tenant's maximum of ${maxCost}`,
      {
        cost,
        maxCost,
        http: { status: 400 },
      },
    );
  };
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const refused = refuseIfTooExpensive(args);
      if (refused) setResultAndStopExecution({ errors: [refused] });
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const refused = refuseIfTooExpensive(args);
      if (refused) setResultAndStopExecution({ errors: [refused] });
    },
  };
}
