// Types of the QuantMindX WebSocket client (ws-client.js). Field names follow the spec exactly.

export type Topic = 'backtest' | 'trading' | 'logs' | 'bench' | `backtest:${string}` | `sweep:${string}`;

export interface BacktestStartData {
  backtest_id: string;
  variant: 'vanilla' | 'spiced' | 'vanilla_full' | 'spiced_full';
  symbol: string;
  timeframe: 'M1' | 'M5' | 'M15' | 'M30' | 'H1' | 'H4' | 'D1';
  start_date: string;
  end_date: string;
  timestamp: string;
}

export interface BacktestProgressData {
  backtest_id: string;
  progress: number;
  status: string;
  bars_processed: number;
  total_bars: number;
  current_date: string;
  trades_count: number;
  current_pnl: number;
  timestamp: string;
}

export interface LogEntryData {
  backtest_id?: string;
  timestamp: string;
  level: 'INFO' | 'WARNING' | 'ERROR' | 'DEBUG' | string;
  message: string;
  module: string;
  function: string;
  line: number;
  logger_name: string;
}

export interface BacktestCompleteData {
  backtest_id: string;
  final_balance: number;
  total_trades: number;
  win_rate: number;
  sharpe_ratio: number | null;
  drawdown: number;
  return_pct: number;
  duration_seconds: number;
  timestamp: string;
  results: Record<string, unknown>;
}

export interface BacktestErrorData {
  backtest_id: string;
  error: string;
  error_details: string;
  timestamp: string;
}

export interface TradingUpdateData {
  bot_id: string;
  status: string;
  pnl: number;
  [extra: string]: unknown;
}

/** Every server event has the spec's shape plus `topic` (the topic this copy was sent on) and
 * `seq` (increasing per topic). */
export interface Event<T extends string, D> {
  type: T;
  data: D;
  seq?: number;
  topic?: Topic;
}

export interface MessageMap {
  backtest_start: Event<'backtest_start', BacktestStartData>;
  backtest_progress: Event<'backtest_progress', BacktestProgressData>;
  backtest_complete: Event<'backtest_complete', BacktestCompleteData>;
  backtest_error: Event<'backtest_error', BacktestErrorData>;
  log_entry: Event<'log_entry', LogEntryData>;
  trading_update: Event<'trading_update', TradingUpdateData>;
  subscription_confirmed: { type: 'subscription_confirmed'; topic: string; recovered?: boolean };
  pong: { type: 'pong' };
  /** A server error frame (bad input) or a client-side connection error. */
  error: { type: 'error'; error: string };
  // Client-side lifecycle events (never sent by the server):
  open: { type: 'open' };
  close: { type: 'close'; code?: number; reason?: string; wasClean: boolean };
  reconnecting: { type: 'reconnecting'; attempt: number; delayMs: number };
  reconnected: { type: 'reconnected'; topics: string[] };
  /** The server could not replay what was missed; reload state over REST. */
  gap: { type: 'gap'; topic: string; since?: number };
  '*': { type: string; [key: string]: unknown };
}

export interface ClientOptions {
  /** Reconnect after an unexpected close (default true). */
  reconnect?: boolean;
  /** Attempts per outage before giving up (default 10). */
  maxReconnectAttempts?: number;
  /** First backoff delay (default 500 ms), multiplied by backoffFactor each attempt. */
  initialDelayMs?: number;
  /** Backoff cap (default 30000 ms). */
  maxDelayMs?: number;
  /** Default 2. */
  backoffFactor?: number;
  /** Each delay is scaled by a random factor in [1 - jitter, 1] (default 0.5). */
  jitter?: number;
  /** Application-level ping interval (default 25000 ms; 0 disables). */
  pingIntervalMs?: number;
  /** A ping without a pong within this time forces a reconnect (default 10000 ms). */
  pongTimeoutMs?: number;
  /** Default 10000 ms. */
  connectTimeoutMs?: number;
  /** How long subscribe()/unsubscribe() wait for confirmation (default 10000 ms). */
  requestTimeoutMs?: number;
  /** WebSocket implementation (default globalThis.WebSocket). */
  WebSocket?: typeof WebSocket;
}

export declare const DEFAULT_OPTIONS: Readonly<Required<Omit<ClientOptions, 'WebSocket'>>>;

export declare function toWebSocketUrl(url: string): string;

export declare class WebSocketClient {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly connected: boolean;
  readonly topics: Set<string>;
  readonly lastSeq: Map<string, number>;
  reconnectAttempts: number;
  connect(): Promise<this>;
  on<K extends keyof MessageMap>(type: K, handler: (message: MessageMap[K]) => void): () => void;
  on(type: string, handler: (message: any) => void): () => void;
  off(type: string, handler?: (message: any) => void): void;
  subscribe(topic: Topic, opts?: { since?: number }): Promise<MessageMap['subscription_confirmed']>;
  unsubscribe(topic: Topic): Promise<{ type: string; topic: string }>;
  ping(): void;
  disconnect(code?: number, reason?: string): void;
}

export declare function createBacktestClient(url: string, options?: ClientOptions): Promise<WebSocketClient>;
export declare function createTradingClient(url: string, options?: ClientOptions): Promise<WebSocketClient>;
export default WebSocketClient;
