import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadScenario, parseScenario, parseScenarioText, ScenarioError } from './scenario.js';

const MINIMAL = { name: 'minimal', cells: 2, customers: 4, duration: '30s' };

function problemsOf(raw: unknown): string[] {
  try {
    parseScenario(raw);
  } catch (error) {
    expect(error).toBeInstanceOf(ScenarioError);
    return [...(error as ScenarioError).problems];
  }
  throw new Error('the scenario was accepted');
}

describe('scenario files', () => {
  it('fills defaults and converts durations to ms', () => {
    const scenario = parseScenario({ ...MINIMAL, warmup: 90, settle: '2m', timeline: [{ at: '250ms', loss: { rate: 0.1, duration: '1.5s' } }] });
    expect(scenario.duration).toBe(30_000);
    expect(scenario.warmup).toBe(90_000);
    expect(scenario.settle).toBe(120_000);
    expect(scenario.timeline).toEqual([{ atMs: 250, action: { kind: 'loss', rate: 0.1, duration: 1_500 } }]);
    expect(scenario.merchantsPerCell).toBe(4);
    expect(scenario.mesh).toEqual({ preset: 'lan', timings: {}, signatures: 'hmac' });
    expect(scenario.invariants).toEqual({ convergeWithin: 30_000, inCellAckWithin: 5_000, inCellDeliveryRatioMin: 0.99 });
  });

  it('gives the desk its defaults, and names the path of its problems', () => {
    expect(parseScenario(MINIMAL).desk).toBeUndefined();
    const desk = parseScenario({ ...MINIMAL, desk: { grace: '2s' } }).desk!;
    expect(desk.grace).toBe(2_000);
    expect(desk.share).toBe(0.5);
    expect(desk.groups).toEqual(['sales', 'support']);
    expect(desk.invariants).toEqual({ assignWithin: 3_000, graceSlack: 3_000, orderTolerance: 2_000 });
    expect(problemsOf({ ...MINIMAL, desk: { capacity: { min: 3, max: 2 }, groups: ['Sales'], agents: { closeAfter: { min: '10s', max: '5s' } } } })).toEqual([
      'desk.groups.0: a group is lower-case letters, digits and dashes',
      'desk.capacity.max: must be at least min',
      'desk.agents.closeAfter.max: must be at least min',
    ]);
  });

  it('names the path of every problem', () => {
    const problems = problemsOf({
      ...MINIMAL,
      cells: 0,
      duration: 'ten seconds',
      traffic: { customerMessagesPerMinute: -1 },
      network: { mesh: { latency: { kind: 'uniform', min: 5, max: 1 } } },
      mesh: { timings: { heartbeatIntervalMs: 100, heartbeatMs: 5 } },
      extra: true,
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^cells: /),
        expect.stringMatching(/^duration: must be a duration such as 250ms/),
        expect.stringMatching(/^traffic\.customerMessagesPerMinute: /),
        expect.stringMatching(/^network\.mesh\.latency\.max: max must be at least min/),
        expect.stringMatching(/^\(root\): .*extra/),
      ]),
    );
    expect(problemsOf({ ...MINIMAL, mesh: { timings: { heartbeatMs: 5 } } })).toEqual([expect.stringMatching(/^mesh\.timings\.heartbeatMs: unknown option; known: heartbeatIntervalMs/)]);
  });

  it('explains bad timeline entries by index and action', () => {
    const problems = problemsOf({
      ...MINIMAL,
      timeline: [
        { at: '5s', partition: { groups: [['0']] } },
        { at: '6s', partitoin: { groups: [['0'], ['rest']] } },
        { at: '7s', crash: { cells: ['cell-x'] } },
        { crash: { cells: ['1'] } },
        { at: '8s', heal: {}, loss: { rate: 0.1 } },
      ],
    });
    expect(problems).toEqual([
      'timeline.0.partition.groups: a partition needs at least two groups',
      'timeline.1.partitoin: needs exactly one action besides `at`, one of partition, oneWay, heal, loss, duplicate, reorder, latency, crash, restart, join, leave, deviceFlap, move, disk; got partitoin',
      'timeline.2.crash.cells.0: must be a cell id (cell-0003), an index (3), a range (0-9), a share (25%), random or rest',
      'timeline.3.at: is required',
      'timeline.4: needs exactly one action besides `at`, one of partition, oneWay, heal, loss, duplicate, reorder, latency, crash, restart, join, leave, deviceFlap, move, disk; got heal, loss',
    ]);
    // Checks across fields run once every field is valid on its own.
    expect(problemsOf({ ...MINIMAL, timeline: [{ at: '2m', heal: {} }] })).toEqual(['timeline.0.at: is after the end of the traffic (duration 30s)']);
  });

  it('refuses text that is neither YAML nor JSON, and says which file', () => {
    expect(() => parseScenarioText('name: [unclosed', 'bad.yaml')).toThrow(/bad.yaml is not valid YAML or JSON/);
    expect(() => parseScenarioText('{"name": "x", "cells": 1}', 'x.json')).toThrow(/invalid x.json:\n {2}customers: .*\n {2}duration: /);
    expect(() => loadScenario('/nonexistent/scenario.yaml')).toThrow(/cannot read scenario \/nonexistent\/scenario.yaml/);
  });

  it('accepts every example in sim/scenarios', () => {
    const directory = join(import.meta.dirname, 'scenarios');
    const files = readdirSync(directory).filter((file) => /\.(ya?ml|json)$/.test(file));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const file of files) expect(() => loadScenario(join(directory, file)), file).not.toThrow();
  });
});
