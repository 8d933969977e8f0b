#!/usr/bin/env node
// Validates Kubernetes objects of Envoy Gateway (gateway.envoyproxy.io/v1alpha1) and the Gateway API
// (gateway.networking.k8s.io/v1) against the schemas of their published models
// (npm @kubernetes-models/envoy-gateway, @kubernetes-models/gateway-api). Reads a JSON array of
// objects on stdin, prints a JSON array of problems (empty: all valid), exits 1 if there are any.
import * as fs from 'node:fs';

import * as envoyGateway from '@kubernetes-models/envoy-gateway/gateway.envoyproxy.io/v1alpha1';
import * as gatewayApi from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1';

const MODELS = {
  'gateway.envoyproxy.io/v1alpha1': envoyGateway,
  'gateway.networking.k8s.io/v1': gatewayApi,
};

const problems = [];
for (const doc of JSON.parse(fs.readFileSync(0, 'utf8'))) {
  const Model = MODELS[doc.apiVersion]?.[doc.kind];
  if (!Model) {
    problems.push(`no model for ${doc.apiVersion} ${doc.kind}`);
    continue;
  }
  try {
    new Model(doc).validate();
  } catch (err) {
    problems.push(`${doc.kind} ${doc.metadata?.name}: ${err.message}`);
  }
}
process.stdout.write(`${JSON.stringify(problems)}\n`);
process.exit(problems.length ? 1 : 0);
