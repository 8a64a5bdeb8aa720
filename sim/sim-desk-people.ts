import type { DeskPeople, DeskPerson } from '../cell/desk/desk-service.js';
import type { Population } from './population.js';

/**
 * The merchants' people as the scenario defines them (sim/population.ts), as the desk reads
 * them through its people port: the simulated cells run the production core and desk on them.
 * In production the people directory plays this part; every cell of the simulation shares this
 * one, as the directory's records travel with a merchant that moves. A desk's agents never
 * change during a run.
 */
export function populationPeople(population: Population, tenant: string): DeskPeople {
  const cache = new Map<string, Map<string, DeskPerson>>();
  const peopleOf = (forTenant: string, merchant: string): Map<string, DeskPerson> | undefined => {
    if (forTenant !== tenant) return undefined;
    let people = cache.get(merchant);
    if (people === undefined) {
      const desk = population.merchant(merchant)?.desk ?? [];
      people = new Map(desk.map((agent) => [agent.id, { id: agent.id, name: agent.id, capacity: agent.capacity, groups: agent.groups, supervisor: false }]));
      cache.set(merchant, people);
    }
    return people;
  };
  return {
    list: (forTenant, merchant) => [...(peopleOf(forTenant, merchant)?.values() ?? [])],
    get: (forTenant, merchant, agent) => peopleOf(forTenant, merchant)?.get(agent),
  };
}
