/** The longest delay Node's setTimeout honours; a longer one fires after 1 ms (TimeoutOverflowWarning). */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/** A timer that may be cleared; `unref` lets the process exit while it is pending. */
export interface LongTimer {
  clear(): void;
  unref(): LongTimer;
}

/**
 * setTimeout for any delay: one longer than Node's limit (about 24.8 days) is covered by a chain of
 * timers, so a 30-day timeout fires after 30 days, not at once.
 */
export function setLongTimeout(callback: () => void, delayMs: number): LongTimer {
  const dueAt = Date.now() + Math.max(0, delayMs);
  let unrefed = false;
  let timer: NodeJS.Timeout;
  const arm = (): void => {
    const remainingMs = dueAt - Date.now();
    timer = remainingMs > MAX_TIMER_DELAY_MS ? setTimeout(arm, MAX_TIMER_DELAY_MS) : setTimeout(callback, Math.max(0, remainingMs));
    if (unrefed) timer.unref();
  };
  arm();
  const handle: LongTimer = {
    clear: () => clearTimeout(timer),
    unref: () => {
      unrefed = true;
      timer.unref();
      return handle;
    },
  };
  return handle;
}

/**
 * setInterval for any period: each round is a setLongTimeout, so a period past Node's limit (a
 * monthly schedule) fires every period, not every millisecond. The next round is armed when one
 * fires; `clear` stops the rounds, `unref` applies to every round.
 */
export function setLongInterval(callback: () => void, periodMs: number): LongTimer {
  let unrefed = false;
  let current: LongTimer;
  let cleared = false;
  const round = (): void => {
    current = setLongTimeout(() => {
      if (cleared) return;
      round();
      callback();
    }, periodMs);
    if (unrefed) current.unref();
  };
  round();
  const handle: LongTimer = {
    clear: () => {
      cleared = true;
      current.clear();
    },
    unref: () => {
      unrefed = true;
      current.unref();
      return handle;
    },
  };
  return handle;
}
