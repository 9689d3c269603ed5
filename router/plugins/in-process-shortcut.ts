/**
 * An operation that one in-process subgraph answers whole — every field it selects is resolved by
 * that subgraph, with no entity hop to another — is executed on that subgraph's schema directly,
 * after the router's own policies ran (authentication, edge limits, demand control, rate limits:
 * they are `onExecute`/`onSubscribe` hooks before this one, and any of them can still stop it). It
 * skips query planning, delegation and result merging, which for such an operation only copy the
 * document and the result. The subgraph applies its shield rules and masks its errors as it does
 * for a planned call (platform/serving/in-process.ts).
 *
 * Which subgraph answers a document is decided once per parsed document (the router's parser cache
 * hands out the same object for the same text) from the supergraph's join directives: a field's
 * `@join__field(graph:)` graphs, or else its type's `@join__type` graphs; a field another graph
 * must `@requires` or `@provides` for is never short-cut. The document must also validate against
 * the subgraph's own schema (arguments, enum values and input types included). Anything else is
 * planned as usual.
 */
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import {
  TypeInfo,
  buildASTSchema,
  getOperationAST,
  specifiedRules,
  validate,
  visit,
  visitWithTypeInfo,
  type ConstDirectiveNode,
  type DocumentNode,
  type ExecutionArgs,
  type GraphQLSchema,
} from 'graphql';
import type { LocalCall, LocalSubgraph } from '../../platform/serving/in-process.ts';
import { acceptRequestId } from '../../platform/serving/request-id.ts';
import { callerOf } from './identity.ts';
import { requestIdOf } from './request-id.ts';

type Graphs = ReadonlySet<string>;

function stringArgument(directive: ConstDirectiveNode, name: string): string | undefined {
  const value = directive.arguments?.find((argument) => argument.name.value === name)?.value;
  return value?.kind === 'StringValue' || value?.kind === 'EnumValue' ? value.value : undefined;
}

function hasArgument(directive: ConstDirectiveNode, name: string): boolean {
  return directive.arguments?.some((argument) => argument.name.value === name) ?? false;
}

function directivesNamed(nodes: readonly ({ directives?: readonly ConstDirectiveNode[] } | null | undefined)[], name: string) {
  return nodes.flatMap((node) => node?.directives?.filter((directive) => directive.name.value === name) ?? []);
}

/** Reads the supergraph's join directives: which subgraphs can resolve each field. */
class Ownership {
  readonly #schema: GraphQLSchema;
  /** join__Graph enum value → subgraph name. */
  readonly #graphNames = new Map<string, string>();
  readonly #fields = new Map<string, Graphs | 'planned'>();

  constructor(supergraph: DocumentNode) {
    this.#schema = buildASTSchema(supergraph, { assumeValid: true, assumeValidSDL: true });
    const graphs = this.#schema.getType('join__Graph');
    for (const value of graphs && 'getValues' in graphs ? graphs.getValues() : []) {
      const name = directivesNamed([value.astNode], 'join__graph')[0];
      const subgraph = name && stringArgument(name, 'name');
      if (subgraph) this.#graphNames.set(value.name, subgraph);
    }
  }

  get schema(): GraphQLSchema {
    return this.#schema;
  }

  #graph(directive: ConstDirectiveNode): string | undefined {
    const graph = stringArgument(directive, 'graph');
    return graph === undefined ? undefined : this.#graphNames.get(graph);
  }

  /** The subgraphs that resolve `typeName.fieldName` themselves, or 'planned' when it needs another's help. */
  fieldGraphs(typeName: string, fieldName: string): Graphs | 'planned' {
    const coordinate = `${typeName}.${fieldName}`;
    const known = this.#fields.get(coordinate);
    if (known) return known;
    const type = this.#schema.getType(typeName);
    const field = type && 'getFields' in type ? type.getFields()[fieldName] : undefined;
    let graphs: Graphs | 'planned' = 'planned';
    if (type && field) {
      const joins = directivesNamed([field.astNode], 'join__field');
      if (joins.some((join) => ['requires', 'provides', 'override', 'contextArguments'].some((name) => hasArgument(join, name)))) {
        graphs = 'planned';
      } else if (joins.length) {
        const owners = joins.filter((join) => !isExternal(join));
        graphs = new Set(owners.map((join) => this.#graph(join)).filter((name) => name !== undefined));
      } else {
        const types = directivesNamed([type.astNode, ...(type.extensionASTNodes ?? [])], 'join__type');
        graphs = new Set(types.map((join) => this.#graph(join)).filter((name) => name !== undefined));
      }
    }
    this.#fields.set(coordinate, graphs);
    return graphs;
  }
}

function isExternal(directive: ConstDirectiveNode): boolean {
  const value = directive.arguments?.find((argument) => argument.name.value === 'external')?.value;
  return value?.kind === 'BooleanValue' && value.value;
}

/** The one in-process subgraph that resolves every field of `document`, if there is one. */
function soleOwner(ownership: Ownership, locals: ReadonlyMap<string, LocalSubgraph>, document: DocumentNode): LocalSubgraph | undefined {
  let candidates: Set<string> | undefined = new Set(locals.keys());
  const typeInfo = new TypeInfo(ownership.schema);
  visit(
    document,
    visitWithTypeInfo(typeInfo, {
      Field(node) {
        if (!candidates?.size) return false;
        if (node.name.value === '__typename') return undefined;
        const parent = typeInfo.getParentType();
        // Introspection and unknown fields (validation refuses those) are planned.
        const graphs = parent && !node.name.value.startsWith('__') ? ownership.fieldGraphs(parent.name, node.name.value) : 'planned';
        if (graphs === 'planned') candidates = undefined;
        else for (const name of candidates ?? []) if (!graphs.has(name)) candidates?.delete(name);
        return undefined;
      },
    }),
  );
  for (const name of candidates ?? []) {
    const local = locals.get(name)!;
    if (validate(local.schema, document, specifiedRules).length === 0) return local;
  }
  return undefined;
}

export function useInProcessShortcut(supergraph: DocumentNode, locals: readonly LocalSubgraph[], closing: AbortSignal): GatewayPlugin {
  if (!locals.length) return {};
  const ownership = new Ownership(supergraph);
  const byName = new Map(locals.map((local) => [local.name as string, local]));
  const owners = new WeakMap<DocumentNode, LocalSubgraph | null>();
  const ownerOf = (document: DocumentNode) => {
    let owner = owners.get(document);
    if (owner === undefined) {
      owner = soleOwner(ownership, byName, document) ?? null;
      owners.set(document, owner);
    }
    return owner;
  };
  const callOf = (args: ExecutionArgs): LocalCall => {
    const { principal, clientAddress } = callerOf(args.contextValue);
    const signal = (args.contextValue as { request?: { signal?: AbortSignal } } | undefined)?.request?.signal;
    // The subgraph logs the operation by name, as a planned call (which names it) would.
    const operationName = args.operationName ?? getOperationAST(args.document)?.name?.value;
    return {
      document: args.document,
      variables: (args.variableValues ?? undefined) as Record<string, unknown> | undefined,
      ...(operationName && { operationName }),
      principal,
      clientAddress: clientAddress ?? null,
      requestId: acceptRequestId(requestIdOf(args.contextValue)),
      ...(signal && { signal }),
      closing,
    };
  };
  return {
    onExecute({ args, setExecuteFn }) {
      const owner = ownerOf(args.document);
      if (owner) setExecuteFn((execution) => owner.execute(callOf(execution)));
    },
    onSubscribe({ args, setSubscribeFn }) {
      const owner = ownerOf(args.document);
      if (owner) setSubscribeFn((subscription) => owner.subscribe(callOf(subscription)));
    },
  };
}
