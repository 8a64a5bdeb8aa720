/**
 * The workload of the route benchmark, drawn from a seed: merchants spread over the cells,
 * customers choosing merchants by Zipf popularity, and a share of them talking to a second
 * merchant homed on another cell.
 */
import { SeededRandom, type Random } from '../platform/random.js';

export interface RouteWorkloadOptions {
  cells: number;
  merchants: number;
  customers: number;
  /** Share of customers who also talk to a merchant homed on another cell than their first's. */
  twoCellShare: number;
  /** Zipf exponent of merchant popularity (1 in the issue). */
  zipfExponent: number;
  seed: number;
}

export interface BenchCustomer {
  id: string;
  /** One merchant, or two homed on different cells. */
  merchants: string[];
}

export interface RouteWorkload {
  /** Merchant ids, most popular first. */
  merchants: string[];
  /** The initial home (cell index) of each merchant. */
  homeIndexOf: Map<string, number>;
  /** The merchants each cell hosts at the start, by cell index. */
  merchantsOfCell: string[][];
  customers: BenchCustomer[];
  /** Draws a merchant by popularity (for route requests). */
  drawMerchant(): string;
}

export function merchantId(rank: number): string {
  return `m-${String(rank).padStart(4, '0')}`;
}

/**
 * Draws ranks 0..n-1 with probability proportional to 1 / (rank + 1)^s: a binary search over
 * the cumulative weights.
 */
export class ZipfSampler {
  private readonly cumulative: Float64Array;

  constructor(
    count: number,
    exponent: number,
    private readonly random: Random,
  ) {
    if (count < 1) throw new RangeError('a Zipf sampler needs at least one item');
    this.cumulative = new Float64Array(count);
    let sum = 0;
    for (let rank = 0; rank < count; rank++) {
      sum += 1 / (rank + 1) ** exponent;
      this.cumulative[rank] = sum;
    }
  }

  next(): number {
    const target = this.random.next() * this.cumulative[this.cumulative.length - 1]!;
    let low = 0;
    let high = this.cumulative.length - 1;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.cumulative[middle]! <= target) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}

/**
 * Merchant of rank r lives on cell r mod cells, so each cell gets popular and unpopular ones
 * alike. Customers draw their merchant by popularity; a `twoCellShare` of them draw a second one
 * until its home differs from the first's.
 */
export function routeWorkload(options: RouteWorkloadOptions): RouteWorkload {
  if (options.cells < 2) throw new RangeError('the route benchmark needs at least two cells');
  const random = new SeededRandom(options.seed);
  const zipf = new ZipfSampler(options.merchants, options.zipfExponent, random);
  const merchants = Array.from({ length: options.merchants }, (_, rank) => merchantId(rank));
  const homeIndexOf = new Map(merchants.map((merchant, rank) => [merchant, rank % options.cells]));
  const merchantsOfCell = Array.from({ length: options.cells }, (_, cell) => merchants.filter((_merchant, rank) => rank % options.cells === cell));
  const customers: BenchCustomer[] = [];
  for (let index = 0; index < options.customers; index++) {
    const first = merchants[zipf.next()]!;
    const customer: BenchCustomer = { id: `cu-${index}`, merchants: [first] };
    if (random.next() < options.twoCellShare && options.merchants > 1) {
      let second = merchants[zipf.next()]!;
      // Bounded: each draw has at least the chance of the least popular merchant of another cell.
      for (let tries = 0; homeIndexOf.get(second) === homeIndexOf.get(first) && tries < 10_000; tries++) second = merchants[zipf.next()]!;
      if (homeIndexOf.get(second) !== homeIndexOf.get(first)) customer.merchants.push(second);
    }
    customers.push(customer);
  }
  return { merchants, homeIndexOf, merchantsOfCell, customers, drawMerchant: () => merchants[zipf.next()]! };
}
