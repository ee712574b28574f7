package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// render is the table of bench/README.md's "WebSockets: chat".
func render(c config, rows []row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d chat clients in rooms of %d, each sending every %v; %d upgrades %v apart (each once the last ended); CPU baseline and margin %v\n\n",
		c.clients, c.roomSize, c.every, c.upgrades, c.upgradeEvery, c.window)
	b.WriteString("| mode | upgrades ok | reconnects / upgrade | lost (missed + never back) | reordered | duplicates | sends while disconnected | delivery p50 / p99 / max (longest delivery gap) | longest silence | server CPU / upgrade (median, max) | server CPU, whole run | server CPU per 1,000 deliveries |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	for _, r := range rows {
		l := r.Load
		ok := 0
		for _, u := range l.Upgrades {
			if u.Err == "" {
				ok++
			}
		}
		perUp := 0.0
		if len(l.Upgrades) > 0 {
			perUp = float64(l.Reconnects) / float64(len(l.Upgrades))
		}
		cpu := slices.Clone(r.UpgradeCPU)
		slices.Sort(cpu)
		med, top := time.Duration(0), time.Duration(0)
		if len(cpu) > 0 {
			med, top = cpu[len(cpu)/2], cpu[len(cpu)-1]
		}
		perK := time.Duration(0)
		if l.Received > 0 {
			perK = r.ServerCPU * 1000 / time.Duration(l.Received)
		}
		fmt.Fprintf(&b, "| %s | %d/%d | %.0f | %d + %d | %d | %d | %d | %s / %s / %s | %s | %s, %s | %s | %s |\n",
			r.Mode, ok, len(l.Upgrades), perUp, l.Missed, l.Unechoed, l.Reordered, l.Duplicates, l.Unsent,
			ms(l.LatencyP50), ms(l.LatencyP99), ms(l.LatencyMax), ms(l.LongestSilence), ms(med), ms(top), ms(r.ServerCPU), ms(perK))
	}
	b.WriteString("\nPer upgrade (mode: [took, reconnects, server CPU above the baseline]):\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "- %s:", r.Mode)
		for i, u := range r.Load.Upgrades {
			cpu := time.Duration(0)
			if i < len(r.UpgradeCPU) {
				cpu = r.UpgradeCPU[i]
			}
			fmt.Fprintf(&b, " [%s, %d, %s]", ms(u.Took), u.Reconnects, ms(cpu))
		}
		b.WriteString("\n")
	}
	return b.String()
}
